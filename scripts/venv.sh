# Sourced by scripts/test and scripts/dev: create .venv if needed and install Peyvand into
# it (editable), with the extras named in $1 (e.g. "test"). Leaves the venv activated.

peyvand_venv() {
  local extras="${1:-}"
  local python="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $("$python" --version)"
    "$python" -m venv .venv
  fi
  # shellcheck disable=SC1091
  . .venv/bin/activate
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  echo "==> pip install -e .${extras:+[$extras]}"
  python -m pip install --quiet --editable ".${extras:+[$extras]}"
}

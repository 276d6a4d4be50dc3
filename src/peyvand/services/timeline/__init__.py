"""The room timeline: creating events, group commit, dispatch, room state and state resolution."""

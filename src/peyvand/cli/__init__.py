"""The ``peyvand`` operator commands: generate-config, serve, register-user, dev."""

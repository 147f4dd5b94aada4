"""Entry points, one module per command: config -> build -> run -> save. ``main(cfg)`` returns a named result."""

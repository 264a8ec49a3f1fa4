"""The `warden` command: the top floor, which may import every package below it."""

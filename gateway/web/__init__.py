"""The gateway's web side: the dashboard's templates and static files, the alert stream."""

"""Operations run beside the server from the command line: backups and restores (``ops.backup``).

They use the services' own interfaces (the database, the storage backends) and stand outside
core, which knows no service.
"""

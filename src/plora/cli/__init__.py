"""The ``plora`` command line: a thin typer skin over the library, one module per command group."""

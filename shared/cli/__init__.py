"""The ``kycface`` command line: thin wrappers over the library, one module per group of commands."""

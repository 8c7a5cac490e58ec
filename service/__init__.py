"""The shell around the domain: configuration, HTTP, authentication, storage and the CLI."""

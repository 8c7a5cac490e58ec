"""The numbered migrations, the only place the schema lives; a package so that they travel inside
the wheel and are read with importlib.resources wherever keyledger is installed."""

"""One module per subcommand: parse options, build a config, call the pipeline's run()."""

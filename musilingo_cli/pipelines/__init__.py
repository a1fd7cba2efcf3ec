"""One pipeline per subcommand, each a config dataclass plus `run(config) -> result`:
ask, train/, make_mi/, evaluate/. `chat_api` is the OpenAI-compatible client make-mi uses, with
`chat_access` (URLs and keys, shown safely) and `chat_parsing` (reading replies)."""

"""One pipeline per subcommand, each a config dataclass plus `run(config) -> result`:
ask (with answering: the encoder thread and generation windows; ask_shards: torchrun ranks, part
files, merge), train/, make_mi/, evaluate/, chat, serve/, export. chat_api (with chat_access,
chat_parsing) is the OpenAI-compatible client that make-mi and eval's judge use."""

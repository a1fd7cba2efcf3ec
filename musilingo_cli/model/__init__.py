"""The model, in the reading order of the paper's Figure 1:

config        ModelConfig: every shape and constant, and the prompt template
audio         file -> float32 mono waveform at the encoder's rate (decode, downmix, resample)
encoder       MERT as a stock HubertModel: waveform -> hidden states [L, B, T, D]
named_encoders  pretrained encoders by name (musicnn-msd: musicnn.py, read by tf_checkpoint.py)
adapter       layer combination, temporal pooling (T -> T' = ceil(T / 325)), Linear(D -> H)
llm           the frozen LLM and its tokenizer (8/4-bit through bitsandbytes); lora: PEFT weights on it
musilingo     MusiLingo: audio tokens spliced into the prompt, loss, generation
generation    sampling presets and the official answer post-processing
context       does a prompt (audio tokens + text + new tokens) fit the LLM's context?
decoding      our batched decoding loop (static cache, one CUDA graph per step); structured: JSON Schema
live_batch    continuous batching for serve and chat (rows join and leave between steps)
checkpoint    our checkpoint format (adapter.safetensors + musilingo.json) and official .pth files
release       the official Hugging Face releases: tensors and configs only
hub           hub ids and local directories -> a local folder
loader        the one place that decides what a --model/--init/--encoder/--llm spec is
"""


def __getattr__(name: str):
    if name == "MusiLingo":  # 0.1's `from musilingo_cli.model import MusiLingo`; lazy so config imports stay light
        from musilingo_cli.model.musilingo import MusiLingo

        return MusiLingo
    raise AttributeError(f"module 'musilingo_cli.model' has no attribute {name!r}")

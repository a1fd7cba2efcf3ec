"""Shared pieces for the eval tests: offline WordNet built once per session from Debian's
wordnet-base, tiny BERTScore encoders (random weights, tokenizers trained here), file writers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CORPUS = [
    "The tempo of the music is slow.",
    "It is a slow song with piano.",
    "An upbeat rock track with electric guitars and drums.",
    "A female vocalist sings a sad ballad.",
    "Energetic rock music featuring electric guitar and percussion.",
    "Yes",
    "No",
    "The genre is jazz.",
]


@pytest.fixture(scope="session")
def wordnet(tmp_path_factory):
    """WordNet via the Debian route into a fresh per-session cache (loaded once, about 6 s)."""
    from musilingo_cli.pipelines.evaluate import nltk_data

    cache = tmp_path_factory.mktemp("nltk_data")
    return nltk_data.ensure_wordnet(cache, search_normal_paths=False, allow_download=False)


def _save_wordpiece_bert(directory: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS * 3, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def _save_bpe_roberta(directory: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tok.model.save(str(directory))  # vocab.json + merges.txt, the files RobertaTokenizer reads
    slow = RobertaTokenizer(
        vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"), model_max_length=64
    )
    slow.save_pretrained(directory)
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(slow),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=70,
        pad_token_id=1,
    )
    RobertaModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A random 2-layer BertModel with a WordPiece tokenizer trained on CORPUS."""
    return _save_wordpiece_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory) -> Path:
    """A random 2-layer RobertaModel with a byte-level BPE tokenizer trained on CORPUS."""
    return _save_bpe_roberta(tmp_path_factory.mktemp("tiny_roberta"))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    """Write records one JSON object per line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# The first 12 items of the real EvalMusicQA.json (github shansongliu/MU-LLaMA
# MusicQA/MusicQA/EvalMusicQA.json; MIT per the mu-llama/MusicQA dataset card).
MUSICQA_EXCERPT = [  # (audio_name, question, answer)
    ("012542.wav", "Describe the audio", "The audio is an alternative rock post-rock electronic experimental track."),
    (
        "012542.wav",
        "Describe the audio in detail",
        "The audio is a blend of post-rock and electronic experimental sounds, with a heavy emphasis on drums and bass. The track features a variety of instrumentation, including guitar, synthesizers, and samples. The overall sound is raw and experimental, with a strong emphasis on atmosphere and mood.",
    ),
    (
        "012542.wav",
        "What do you hear in the audio?",
        "The audio is a mix of distorted guitar riffs, electronic samples, and experimental sounds. The drums and bass are heavily distorted, creating a raw and aggressive sound. The track features a variety of samples, including snippets of dialogue and sound effects. The overall sound is experimental and unpredictable, with a strong emphasis on atmosphere and mood.",
    ),
    (
        "012542.wav",
        "What can be inferred from the audio?",
        "From the audio, it can be inferred that the track is a blend of post-rock and electronic experimental sounds. The track features a variety of instrumentation, including guitar, synthesizers, and samples. The overall sound is raw and experimental, with a strong emphasis on atmosphere and mood.",
    ),
    (
        "012542.wav",
        "What is the alternative genre of music in the audio?",
        "The alternative genre of music in the audio is postrock.",
    ),
    (
        "012542.wav",
        "What is the electronic element in the audio?",
        "The electronic element in the audio is experimental.",
    ),
    (
        "012542.wav",
        "What is the experimental element in the audio?",
        "The experimental element in the audio is postrock.",
    ),
    (
        "012542.wav",
        "What is the rock element in the audio?",
        "The rock element in the audio is alternative and postrock.",
    ),
    (
        "012542.wav",
        "What is the overall genre of the audio?",
        "The overall genre of the audio is postrock electronic experimental rock.",
    ),
    (
        "012543.wav",
        "Describe the audio",
        "The audio is an alternative, electronic, experimental, postrock, and rock music.",
    ),
    (
        "012543.wav",
        "Describe the audio in detail",
        "The audio is a mix of various genres such as alternative, electronic, experimental, postrock, and rock. The music is characterized by a blend of different sounds, rhythms, and melodies, creating a unique and dynamic soundscape.",
    ),
    (
        "012543.wav",
        "What do you hear in the audio?",
        "In the audio, you can hear various instruments such as drums, bass, guitar, keys, and synths. The drums are fast-paced and energetic, creating a sense of movement and momentum. The bass and guitar provide a solid foundation for the music, while the keys and synths add layers of texture and depth.",
    ),
]


def musicqa_json(path: Path) -> Path:
    """MUSICQA_EXCERPT written in the EvalMusicQA.json schema."""
    items = [
        {"audio_name": a, "conversation": [{"from": "human", "value": q}, {"from": "gpt", "value": r}]}
        for a, q, r in MUSICQA_EXCERPT
    ]
    path.write_text(json.dumps(items), encoding="utf-8")
    return path

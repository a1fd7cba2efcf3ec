"""Any Hugging Face causal LM can stand in for Vicuna: a tiny Qwen2 (no BOS token, tied
embeddings) trains and answers through the same code path."""

import torch
from model_helpers import make_mert, make_tokenizer
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from musilingo_cli.model.config import ModelConfig
from musilingo_cli.model.generation import GenerationSettings
from musilingo_cli.model.loader import assemble


def test_qwen_without_bos(tmp_path):
    tok = make_tokenizer(tmp_path / "tok")
    tok = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(tmp_path / "qwen")
    torch.manual_seed(0)
    Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=len(tok) + 8,  # room for Qwen's own <|endoftext|>
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
    ).save_pretrained(tmp_path / "qwen")
    make_mert(tmp_path / "mert")
    config = ModelConfig.for_stage("finetune", encoder=str(tmp_path / "mert"), llm=str(tmp_path / "qwen"))
    model = assemble(config, None)
    assert model.tokenizer.bos_token_id is None
    assert model.tokenizer.pad_token_id is not None and model.tokenizer.pad_token_id < model.llm.config.vocab_size
    features = list(model.encode(torch.randn(2, 24000 * 5)))
    ids, _ = model.token_row(features[0].shape[0], "What genre?", None)
    assert ids[0] != model.tokenizer.eos_token_id  # no BOS, and nothing put in its place
    loss = model(features, ["What genre?", "Is it fast or slow?"], ["Rock.", "It is slow, with a calm mood."])
    loss.backward()
    assert torch.isfinite(loss) and model.adapter.proj.weight.grad is not None
    answers = model.generate(
        features, ["What genre?", "Tempo?"], GenerationSettings.from_preset("greedy", max_new_tokens=5)
    )
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)

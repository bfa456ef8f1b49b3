"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/): small valid files of every kind, made by
the real tools where one exists (transformers configs, safetensors, peft adapter configs, gguf), so the fuzzer
starts from inputs that reach deep into each parser. Run with the pinned packages of
tests/reference/requirements.txt:  /work/venv/bin/python tests/fuzz/make_seeds.py
"""
import json
import os
import pathlib
import struct

import numpy as np

here = pathlib.Path(__file__).resolve().parent
root = here.parent.parent
corpus = here / "corpus"


def put(target, name, data):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


def safetensors_seeds():
    import torch
    from safetensors.torch import save

    put("safetensors", "f32.safetensors", save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}))
    put("safetensors", "mixed.safetensors",
        save({"a": torch.ones(3, dtype=torch.bfloat16), "b": torch.ones(2, 2, dtype=torch.float16),
              "i": torch.arange(4, dtype=torch.int64), "j": torch.arange(3, dtype=torch.int32),
              "d": torch.zeros(2, dtype=torch.float64)}, metadata={"format": "pt"}))
    put("safetensors", "empty.safetensors", save({}))


def config_seeds():
    from transformers import LlamaConfig, MistralConfig, MixtralConfig, Qwen2Config

    small = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=64)
    put("hf_config", "llama.json", LlamaConfig(**small).to_json_string())
    put("hf_config", "llama3_rope.json", LlamaConfig(**small, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32}).to_json_string())
    put("hf_config", "qwen2.json", Qwen2Config(**small, tie_word_embeddings=True).to_json_string())
    put("hf_config", "mistral.json", MistralConfig(**small, sliding_window=16).to_json_string())
    put("hf_config", "mixtral.json", MixtralConfig(**small, num_local_experts=4).to_json_string())


def adapter_seeds():
    from peft import LoraConfig

    def dump(cfg):
        d = cfg.to_dict()
        return json.dumps({k: (sorted(v) if isinstance(v, set) else v) for k, v in d.items()}, indent=2)

    # The fuzz fixture's adapter (r = 2, alpha = 4, q_proj and v_proj): load_adapter accepts only a config that
    # matches the model, so other shapes of config come from mutation and the dictionary.
    put("adapter_config", "qv.json", dump(LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                     lora_dropout=0.1, task_type="CAUSAL_LM")))


def trainer_state_seeds():
    put("trainer_state", "lora.json", json.dumps({
        "step": 3, "optimizer_steps": 3, "data_position": 5, "lora_dropout_seed": 1, "lora_dropout_calls": 12,
        "history": {"train_loss": [[1, 4.2], [2, 4.0]], "best_val_loss": 3.9}}, indent=2))
    put("trainer_state", "plain.json", json.dumps({"step": 0, "optimizer_steps": 0, "data_position": 0,
                                                   "history": {}}))


def generation_config_seeds():
    from transformers import GenerationConfig

    put("generation_config", "sampling.json", GenerationConfig(
        do_sample=True, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repetition_penalty=1.1,
        max_new_tokens=64, bos_token_id=1, eos_token_id=[2, 3], pad_token_id=0).to_json_string())
    put("generation_config", "greedy.json", GenerationConfig(do_sample=False, eos_token_id=2).to_json_string())


def shard_seeds():
    def shard(tokens, width, vocab):
        header = bytearray(64)
        header[0:8] = b"TLSHARD\0"
        struct.pack_into("<IIQ", header, 8, 1, width, len(tokens))
        struct.pack_into("<III", header, 28, 1, 2, vocab)
        struct.pack_into("<QQ", header, 40, 1, 0x1234)
        return bytes(header) + np.asarray(tokens, dtype="<u2" if width == 2 else "<u4").tobytes()

    put("shards", "u16.bin", shard([1, 5, 6, 7, 8, 9, 2, 1, 10, 11, 2], 2, 300))
    put("shards", "u32.bin", shard([1, 70000, 3, 4, 5, 2], 4, 80000))


def gguf_seeds():
    import gguf

    path = here / "seed.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    for key, value in [("context_length", 64), ("embedding_length", 32), ("block_count", 1),
                       ("feed_forward_length", 48), ("attention.head_count", 4), ("attention.head_count_kv", 2)]:
        w.add_uint32("llama." + key, value)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_uint32("llama.vocab_size", 8)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(8)])
    w.add_tensor("token_embd.weight", np.ones((8, 32), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    put("gguf", "llama.gguf", path.read_bytes())
    path.unlink()


def tokenizer_seeds():
    ref = root / "tests/reference/tokenizer"
    put("tokenizer_json", "trained_byte_level.json", (ref / "trained_byte_level.json").read_bytes())
    put("tokenizer_json", "trained_byte_fallback.json", (ref / "trained_byte_fallback.json").read_bytes())
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "при", "##вет", "hello",
                                         "##s", ",", "!"])}
    put("tokenizer_json", "wordpiece.json", json.dumps({
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t, i in vocab.items() if t.startswith("[")],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                           "pair": [], "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                                                          "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}}, ensure_ascii=False, indent=1))
    for i, text in enumerate(["Привет, мир! Hello world.", "Татарча: әйе, һәм, өчен, үзе, җир, ңа.",
                              "emoji 👋🏽 and a ZWJ 👩‍👩‍👧 family", "  leading and trailing spaces  \n\ttabs",
                              "def f(x):\n    return x ** 2  # code", "é vs é (NFC and NFD)",
                              "<|im_start|>user\nhi<|im_end|>", "▁ sentencepiece marker"]):
        put("bpe_roundtrip", f"text{i}.txt", text)


def template_seeds():
    import re

    source = (root / "include/tinylm/tokenizer/chat_template.hpp").read_text()
    for name in ("chatml", "zephyr"):
        m = re.search(name + r' = R"tmpl\((.*?)\)tmpl"', source, re.S)
        put("jinja", name + ".jinja", m.group(1))
        put("chat_template", name + "_config.json", json.dumps({"chat_template": m.group(1), "bos_token": "<s>",
                                                                "eos_token": {"content": "</s>"}}))
    put("jinja", "features.jinja", """{%- macro show(m, n=1) -%}{{ m.role | upper }}:{{ m.content | trim }}{{ '!' * n }}{%- endmacro -%}
{%- set ns = namespace(count=0) -%}
{%- for m in messages if m.content is string -%}{%- set ns.count = ns.count + 1 -%}
{{ show(m, loop.index) }}{% if not loop.last %}, {% endif %}{%- endfor -%}
{{ messages | length }} {{ ns.count }} {{ range(3) | list | join('-') }} {{ {'a': 1} | tojson }}
{{ 'x' if add_generation_prompt else 'y' }} {{ "%s-%d" | format('a', 2) }} {{ messages[0].content[:3] }}
{%- raw %}{{ raw }}{% endraw -%}""")
    put("chat_template", "named_list.json", json.dumps({"chat_template": [
        {"name": "default", "template": "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"},
        {"name": "tool_use", "template": "{{ tools }}"}], "eos_token": "</s>"}))
    put("chat_template", "messages.json", json.dumps([
        {"role": "system", "content": "s"}, {"role": "user", "content": "привет"},
        {"role": "assistant", "content": "ok", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "42"}], ensure_ascii=False))


def data_seeds():
    lines = lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    put("sft", "alpaca.jsonl", lines([{"instruction": "Сколько планет?", "input": "", "output": "Восемь."},
                                      {"instruction": "Переведи", "input": "hello", "output": "привет"}]))
    put("sft", "alpaca_system.json", json.dumps([{"instruction": "Вопрос", "input": "Ты помощник.",
                                                  "output": "Ответ"}], ensure_ascii=False))
    put("sft", "messages.jsonl", lines([{"messages": [{"role": "system", "content": "s"},
                                                      {"role": "user", "content": "u"},
                                                      {"role": "assistant", "content": "a"}]}]))
    put("sft", "prompt_completion.jsonl", lines([{"prompt": "2+2=", "completion": "4"}]))
    put("sft", "seed_tasks.jsonl", lines([{"id": "seed_task_0", "name": "n", "instruction": "i",
                                           "instances": [{"input": "", "output": "o"}], "is_classification": False}]))
    put("sft", "rated.csv", 'text,rating\n"Анекдот, с запятой",3\n"второй ""в кавычках""",1\n')
    put("tasks", "mc.jsonl", lines([{"question": "Столица России?", "choices": ["Москва", "Казань"], "answer": 0}]))
    put("tasks", "qa.jsonl", lines([{"id": "f1_0", "source": "s", "answer": "a", "questions": ["q1", "q2", "q3"],
                                     "distractors": ["b", "c", "d"], "stated": "a is so"}]))
    put("run_log", "log.jsonl", lines([{"step": 1, "loss": 4.5, "lr": 0.001, "grad_norm": 1.2, "tokens_per_s": 900},
                                       {"step": 2, "val_loss": 4.1},
                                       {"step": 3, "prompt": "Жили-были", "sample": " дед да баба"},
                                       {"step": 60, "loss": 3.0}]))


if __name__ == "__main__":
    for make in (safetensors_seeds, config_seeds, adapter_seeds, trainer_state_seeds, generation_config_seeds,
                 shard_seeds, gguf_seeds, tokenizer_seeds, template_seeds, data_seeds):
        make()
    print(sorted(str(p.relative_to(here)) for p in corpus.rglob("*") if p.is_file()))

#!/usr/bin/env python3
"""A tiny random BertModel and what transformers computes with it, for tinylm's encoder parity test.

Writes into <out> (default: tests/reference/fixtures/bert_tiny/ next to this folder):
  config.json, model.safetensors   the BertModel folder (save_pretrained, f32)
  model_f16.safetensors,           the same weights in f16 and bf16 (the loader converts them)
  model_bf16.safetensors
  expected.safetensors             inputs and outputs in float64 math, stored as f32:
     ids (B, T) int32, type_ids (B, T) int32, lengths (B) int32  right-padded rows
     hidden (B, T, d)      last_hidden_state (padded query positions included)
     mean, cls, max (B, d) sentence-transformers' pooling of the real tokens, then L2-normalised
     r (B, d)              a fixed random weight; loss = sum(normalize(mean) * r)
     grad.<name>           d(loss)/d(parameter) for every parameter of the model
     ids2, type_ids2, lengths2   a second batch: the positives of the rows of ids (anchors)
     mnrl_loss             sentence-transformers' MultipleNegativesRankingLoss (scale 20) of the mean-pooled
                           embeddings of (ids, ids2), computed by the loss class itself
     mnrl_grad.<name>      its gradient for every parameter
Usage: python make_bert_fixture.py [--out DIR]
"""

import argparse
import os

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "fixtures", "bert_tiny"))
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)

    torch.manual_seed(0)
    config = BertConfig(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=16, type_vocab_size=2,
                        layer_norm_eps=1e-12, hidden_act="gelu", attn_implementation="eager")
    model = BertModel(config).eval()
    with torch.no_grad():  # larger than BERT's 0.02 so that every path matters
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    model.save_pretrained(out, safe_serialization=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file({k: v.half() for k, v in state.items()}, os.path.join(out, "model_f16.safetensors"), {"format": "pt"})
    save_file({k: v.bfloat16() for k, v in state.items()}, os.path.join(out, "model_bf16.safetensors"), {"format": "pt"})

    B, T = 3, 9
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, config.vocab_size, (B, T), generator=g)
    types = torch.randint(0, 2, (B, T), generator=g)
    lengths = torch.tensor([9, 5, 1])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    ids = ids * mask  # padding id 0
    types = types * mask

    m64 = BertModel(config).double().eval()
    m64.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    hidden = m64(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
    m = mask[:, :, None].double()
    mean = (hidden * m).sum(1) / m.sum(1)
    cls = hidden[:, 0]
    mx = hidden.masked_fill(m == 0, -1e9).max(1).values
    norm = torch.nn.functional.normalize
    r = torch.randn(B, config.hidden_size, generator=g, dtype=torch.float64)
    loss = (norm(mean, dim=-1) * r).sum()
    loss.backward()

    expected = {
        "ids": ids.int(), "type_ids": types.int(), "lengths": lengths.int(),
        "hidden": hidden.detach().float(), "mean": norm(mean, dim=-1).detach().float(),
        "cls": norm(cls, dim=-1).detach().float(), "max": norm(mx, dim=-1).detach().float(), "r": r.float(),
        "loss": loss.detach().float().reshape(1),
    }
    for name, p in m64.named_parameters():
        expected["grad." + name] = (p.grad if p.grad is not None else torch.zeros_like(p)).float()

    # The ranking loss on the same model: anchors = the rows above, positives = a second batch.
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    ids2 = torch.randint(1, config.vocab_size, (B, T), generator=g)
    types2 = torch.randint(0, 2, (B, T), generator=g)
    lengths2 = torch.tensor([4, 9, 6])
    mask2 = (torch.arange(T)[None, :] < lengths2[:, None]).long()
    ids2, types2 = ids2 * mask2, types2 * mask2
    m64.zero_grad()

    class Pooled(torch.nn.Module):  # what SentenceTransformer(...)(features) returns: the mean-pooled embedding
        def forward(self, f):
            h = m64(input_ids=f["input_ids"], token_type_ids=f["token_type_ids"],
                    attention_mask=f["attention_mask"]).last_hidden_state
            mm = f["attention_mask"][:, :, None].double()
            return {"sentence_embedding": (h * mm).sum(1) / mm.sum(1)}

    mnrl = MultipleNegativesRankingLoss(Pooled(), scale=20.0)
    feats = [{"input_ids": ids, "token_type_ids": types, "attention_mask": mask},
             {"input_ids": ids2, "token_type_ids": types2, "attention_mask": mask2}]
    loss2 = mnrl(feats, None)
    loss2.backward()
    expected.update({"ids2": ids2.int(), "type_ids2": types2.int(), "lengths2": lengths2.int(),
                     "mnrl_loss": loss2.detach().float().reshape(1)})
    for name, p in m64.named_parameters():
        expected["mnrl_grad." + name] = (p.grad if p.grad is not None else torch.zeros_like(p)).float()
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))
    print("wrote", out)


if __name__ == "__main__":
    main()

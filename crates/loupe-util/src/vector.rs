//! Vector operations every crate needs on plain `f32` slices, compiled for the CPU's widest vector
//! instructions.
//!
//! Rust builds for the baseline x86-64 (SSE2) unless told otherwise, which leaves AVX2 and AVX-512
//! unused in the loops the compiler vectorises. Each function here is `multiversion`ed: compiled
//! once per instruction set and dispatched at run time to the best one this CPU has, so one binary
//! runs anywhere and uses AVX-512 where it exists. Kernels elsewhere that loop over rows use the
//! same attribute (`#[multiversion(targets = "simd")]`).
//!
//! Sums are kept in 16 independent lanes (a strict left-to-right sum cannot be vectorised), so a
//! dot product is reproducible for given inputs but may differ from a sequential sum in the last
//! bits.

use multiversion::multiversion;

const LANES: usize = 16;

/// The dot product of two equally long vectors.
#[multiversion(targets = "simd")]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0f32; LANES];
    let mut a_chunks = a.chunks_exact(LANES);
    let mut b_chunks = b.chunks_exact(LANES);
    for (ca, cb) in (&mut a_chunks).zip(&mut b_chunks) {
        for i in 0..LANES {
            lanes[i] += ca[i] * cb[i];
        }
    }
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// `y += a · x`, element by element (over the shorter of the two).
#[multiversion(targets = "simd")]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += a * x);
}

/// The Euclidean norm.
pub fn norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_axpy_agree_with_the_plain_loops() {
        // 37 entries: two full 16-lane chunks and a tail.
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| (*x as f64) * (*y as f64)).sum();
        assert!((dot(&a, &b) as f64 - plain).abs() < 1e-5);
        assert!((norm(&a) as f64 - a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()).abs() < 1e-5);
        let mut y = b.clone();
        axpy(&mut y, 2.0, &a);
        for i in 0..37 {
            assert_eq!(y[i], b[i] + 2.0 * a[i]);
        }
    }
}

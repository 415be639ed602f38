//! Adam (Kingma & Ba), with its moments kept where a checkpoint can save them.
//!
//! candle-optimisers' and candle-nn's Adam keep their first and second moments private, so a run
//! resumed from a checkpoint would restart them at zero and take full-size steps until they
//! refill. Saving them makes a resumed run continue exactly where the interrupted one was.

use rayon::prelude::*;

use crate::Params;

/// The Adam optimiser, its state (step count and both moments) public so a checkpoint can save it.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    /// Decay rate of the first moment (the gradient's running mean), typically 0.9.
    pub beta1: f64,
    /// Decay rate of the second moment (the squared gradient's running mean), typically 0.999.
    pub beta2: f64,
    /// Added to the second moment's square root to keep the step finite.
    pub eps: f64,
    /// Steps taken so far.
    pub t: u64,
    /// First moment, shaped like the parameters.
    pub m: Params,
    /// Second moment.
    pub v: Params,
}

impl Adam {
    /// A fresh optimiser for parameters shaped like `params`: no steps taken, both moments zero.
    pub fn new(params: &Params, beta1: f64, beta2: f64, eps: f64) -> Self {
        Adam {
            beta1,
            beta2,
            eps,
            t: 0,
            m: params.zeros_like(),
            v: params.zeros_like(),
        }
    }

    /// One update of `params` with `grads` at learning rate `lr`.
    pub fn step(&mut self, params: &mut Params, grads: &Params, lr: f64) {
        self.t += 1;
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        // Bias corrections folded into the step size and epsilon.
        let c1 = 1.0 - self.beta1.powi(self.t as i32);
        let c2 = 1.0 - self.beta2.powi(self.t as i32);
        let step = (lr * c2.sqrt() / c1) as f32;
        let eps = (self.eps * c2.sqrt()) as f32;
        let fields = params
            .fields_mut()
            .into_iter()
            .zip(self.m.fields_mut())
            .zip(self.v.fields_mut())
            .zip(grads.fields());
        for ((((_, p), (_, m)), (_, v)), (_, g)) in fields {
            p.par_iter_mut()
                .zip(m.par_iter_mut())
                .zip(v.par_iter_mut())
                .zip(g.par_iter())
                .with_min_len(4096)
                .for_each(|(((p, m), v), &g)| {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *p -= step * *m / (v.sqrt() + eps);
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_steps_match_the_textbook_formula() {
        let mut params = Params::zeros(2, 1, false);
        params.enc = vec![1.0, -2.0];
        let mut adam = Adam::new(&params, 0.9, 0.999, 1e-8);
        let mut grads = params.zeros_like();
        let (mut m, mut v, mut p) = (0.0f64, 0.0f64, 1.0f64);
        for (t, g) in [0.5f64, -0.25, 1.0].iter().enumerate() {
            grads.enc = vec![*g as f32, 0.0];
            adam.step(&mut params, &grads, 0.1);
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            let t = t as i32 + 1;
            p -= 0.1 * (m / (1.0 - 0.9f64.powi(t))) / ((v / (1.0 - 0.999f64.powi(t))).sqrt() + 1e-8);
            assert!(
                (params.enc[0] as f64 - p).abs() < 1e-5,
                "step {t}: {} vs {p}",
                params.enc[0]
            );
        }
        assert_eq!(params.enc[1], -2.0, "a zero gradient leaves a parameter alone");
    }
}

//! Seeded randomness: one `u64` seed drives every random choice in the world.
//!
//! `SimRng` is xoshiro256** seeded through splitmix64 (the reference seeding
//! recommended by the xoshiro authors). It is small, fast, and, unlike
//! `thread_rng`, reproducible: the same seed gives the same stream on every
//! machine. Sub-streams are derived by label so that adding a random draw in
//! one component (say, one link) does not shift the stream of another.

/// splitmix64 step: the seeding generator for xoshiro, also a good 64-bit mixer.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over a label: a fixed (not per-process randomised) hash for stream names.
fn label_hash(label: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in label.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// A deterministic pseudo-random generator (xoshiro256**).
#[derive(Clone, Debug)]
pub struct SimRng {
    s: [u64; 4],
}

impl SimRng {
    /// A generator seeded from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Self { s }
    }

    /// An independent stream for the component named `label` and instance `n`
    /// (e.g. `("link", a << 32 | b)`), derived from the world seed.
    pub fn derive(seed: u64, label: &str, n: u64) -> Self {
        let mut sm = seed ^ label_hash(label);
        let mixed = splitmix64(&mut sm) ^ n.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        Self::new(mixed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform float in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `[0, n)`; `n == 0` gives 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift; the tiny bias (< n / 2^64) is irrelevant here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform integer in `[lo, hi]` (inclusive).
    pub fn range_inclusive(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p` (clamped to [0, 1]). Draws nothing when `p <= 0`,
    /// so a link without loss does not consume randomness for it.
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        self.next_f64() < p
    }

    /// An exponentially distributed value with the given mean (0 when the mean is 0).
    pub fn exponential(&mut self, mean: f64) -> f64 {
        if mean <= 0.0 {
            return 0.0;
        }
        // 1 - u is in (0, 1], so the logarithm is finite.
        -mean * (1.0 - self.next_f64()).ln()
    }

    /// A standard normal sample (Box-Muller; one of the pair is discarded for simplicity).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (core::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_derived_streams_differ() {
        let mut a = SimRng::new(7);
        let mut b = SimRng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut x = SimRng::derive(7, "link", 1);
        let mut y = SimRng::derive(7, "link", 2);
        let mut z = SimRng::derive(7, "disk", 1);
        let (x0, y0, z0) = (x.next_u64(), y.next_u64(), z.next_u64());
        assert_ne!(x0, y0);
        assert_ne!(x0, z0);
    }

    #[test]
    fn distributions_have_the_right_moments() {
        let mut r = SimRng::new(42);
        let n = 100_000;
        let mean_u = (0..n).map(|_| r.next_f64()).sum::<f64>() / n as f64;
        assert!((mean_u - 0.5).abs() < 0.01, "uniform mean {mean_u}");
        let mean_e = (0..n).map(|_| r.exponential(10.0)).sum::<f64>() / n as f64;
        assert!((mean_e - 10.0).abs() < 0.3, "exponential mean {mean_e}");
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let m = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        assert!(
            m.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "normal {m} {var}"
        );
        for _ in 0..1000 {
            let v = r.range_inclusive(3, 5);
            assert!((3..=5).contains(&v));
        }
    }
}

//! Latency histogram of the sink: fixed-width buckets read from the BPF map, and percentiles.

/// Width of one bucket in nanoseconds (`1 << LAT_SHIFT` in `bpf/sink.c`).
pub const BUCKET_NS: u64 = 256;
/// Number of buckets; the last one also holds everything longer.
pub const BUCKETS: usize = 8192;

/// Counts per bucket of [`BUCKET_NS`] nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// `counts[i]`: samples in `[i * BUCKET_NS, (i + 1) * BUCKET_NS)`.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Number of samples.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q`-quantile (0.0..=1.0) in nanoseconds: the upper edge of the bucket holding the
    /// sample of rank `ceil(q * total)` (so an estimate that errs high by at most one bucket).
    /// `None` without samples.
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some((i as u64 + 1) * BUCKET_NS);
            }
        }
        None
    }

    /// Samples that landed in the last (overflow) bucket.
    pub fn overflow(&self) -> u64 {
        if self.counts.len() == BUCKETS {
            self.counts[BUCKETS - 1]
        } else {
            0
        }
    }
}

/// Median of `v` (the mean of the middle two for an even count); `None` when empty. NaNs sort last.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut h = Histogram { counts: vec![0; 16] };
        assert_eq!(h.quantile_ns(0.5), None);
        h.counts[3] = 50; // 768..1024 ns
        h.counts[10] = 49;
        h.counts[15] = 1;
        assert_eq!(h.total(), 100);
        assert_eq!(h.quantile_ns(0.5), Some(4 * 256));
        assert_eq!(h.quantile_ns(0.51), Some(11 * 256));
        assert_eq!(h.quantile_ns(0.99), Some(11 * 256));
        assert_eq!(h.quantile_ns(1.0), Some(16 * 256));
        assert_eq!(h.quantile_ns(0.0), Some(4 * 256), "rank at least 1");
        assert_eq!(h.quantile_ns(7.0), Some(16 * 256), "clamped");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}

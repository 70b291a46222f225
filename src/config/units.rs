//! Parsers for the value syntaxes the config file uses: durations, sizes, rates, CIDRs.

use std::num::NonZeroU32;
use std::time::Duration;

use ipnet::IpNet;

/// `"250ms"`, `"2s"`, `"10m"`: humantime's syntax.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like \"250ms\", \"2s\" or \"10m\" ({e})"))
}

/// `"64KiB"`, `"512MiB"`, `"16384"`: bytesize's syntax, binary or decimal units.
pub fn size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{s:?} is not a size like \"64KiB\" or \"512MiB\" ({e})"))
}

/// A rate: a number of events per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per `per`.
    pub count: NonZeroU32,
    /// The period the count refers to.
    pub per: Duration,
}

impl Rate {
    /// The steady spacing between two events at this rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count.get()
    }

    /// Events per second, for display and estimates.
    pub fn per_second(&self) -> f64 {
        self.count.get() as f64 / self.per.as_secs_f64()
    }
}

/// `"100/s"`, `"600/m"`, `"10/5s"`, `"1000/h"`.
///
/// Hand-written because no maintained crate parses this small nginx-style syntax,
/// and it is three lines.
pub fn rate(s: &str) -> Result<Rate, String> {
    let bad = || format!("{s:?} is not a rate like \"100/s\", \"600/m\" or \"10/5s\"");
    let (n, per) = s.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = n.trim().parse().map_err(|_| bad())?;
    let count = NonZeroU32::new(count).ok_or_else(|| format!("{s:?}: a rate must be above 0"))?;
    let per = match per.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => duration(other).map_err(|_| bad())?,
    };
    if per.is_zero() {
        return Err(bad());
    }
    Ok(Rate { count, per })
}

/// `"10.0.0.0/8"`, `"::1/128"`, or a bare address meaning just that address.
pub fn cidr(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or CIDR like \"10.0.0.0/8\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_like_nginx() {
        assert_eq!(rate("100/s").unwrap().interval(), Duration::from_millis(10));
        assert_eq!(
            rate("600/m").unwrap().interval(),
            Duration::from_millis(100)
        );
        assert_eq!(
            rate("10/5s").unwrap().interval(),
            Duration::from_millis(500)
        );
        assert!(rate("0/s").is_err());
        assert!(rate("fast").is_err());
    }

    #[test]
    fn sizes_and_durations_use_their_crates_syntax() {
        assert_eq!(size("64KiB").unwrap(), 65536);
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(size("lots").is_err());
        assert!(duration("2 parsecs").is_err());
    }

    #[test]
    fn a_bare_address_is_a_single_host_network() {
        assert_eq!(cidr("10.1.2.3").unwrap().prefix_len(), 32);
        assert_eq!(cidr("::1").unwrap().prefix_len(), 128);
        assert_eq!(cidr("10.0.0.0/8").unwrap().prefix_len(), 8);
    }
}

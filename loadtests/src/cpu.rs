//! CPU time of this process (and of spawned ones), from /proc.

/// Linux exports /proc times in USER_HZ, which is 100 on every architecture we run on.
const USER_HZ: f64 = 100.0;

/// utime + stime of `pid` (or of this process) in seconds; None off Linux or if gone.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' come state (field 3) ...; utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_a_cpu_time() {
        let a = super::cpu_seconds(None).expect("linux /proc");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let b = super::cpu_seconds(None).unwrap();
        assert!(b >= a);
    }
}

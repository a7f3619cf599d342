//! The facts about the machine and the build that go at the top of the report.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where and how the comparison ran.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    /// The CPU model, from `/proc/cpuinfo`.
    pub(crate) cpu: String,
    /// CPUs the harness may use (gathered before it pins itself).
    pub(crate) cores: usize,
    /// The kernel release.
    pub(crate) kernel: String,
    /// The compiler that built the harness.
    pub(crate) rustc: &'static str,
    /// The build profile: `release` or `debug`.
    pub(crate) profile: &'static str,
    /// When the run started, UTC.
    pub(crate) date: String,
    /// The commit of the working tree, and whether it had changes.
    pub(crate) commit: Option<String>,
}

impl Machine {
    /// Gathers the facts now.
    pub(crate) fn gather() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name")?.split_once(':').map(|(_, name)| name.trim()))
            .unwrap_or("unknown")
            .to_owned();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| format!("Linux {}", release.trim()))
            .unwrap_or_else(|_| std::env::consts::OS.to_owned());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map(usize::from).unwrap_or(1),
            kernel,
            rustc: env!("COMPARE_RUSTC_VERSION"),
            profile: if cfg!(debug_assertions) { "debug" } else { "release" },
            date: utc_date(SystemTime::now()),
            commit: commit(),
        }
    }
}

/// The short commit hash of the repository the harness was built from, marked when the
/// working tree has changes; `None` without git.
fn commit() -> Option<String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(repo).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let hash = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty = git(&["status", "--porcelain"]).is_some_and(|status| !status.is_empty());
    Some(if dirty { format!("{hash} (with uncommitted changes)") } else { hash })
}

/// `time` as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn utc_date(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let minutes = secs.rem_euclid(86_400) / 60;
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", minutes / 60, minutes % 60)
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let time = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(utc_date(time), "2023-11-14 22:13 UTC");
    }
}

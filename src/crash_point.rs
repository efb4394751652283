//! Named points of the write path, the checkpoint and the index where a test makes the
//! process abort, as a crash there would: with `POPMASTER_CRASH_POINT=<point>:<n>` in its
//! environment, the process aborts the `n`-th time it reaches `<point>` (after a line on
//! standard error naming it). With `<point>:<n>:fail`, `reached` answers `true` that time
//! instead, and a point that can fail (`store-half-applied`: the batch's next key is refused,
//! as a disk error would refuse it) fails there. Debug builds only, which is what the tests
//! run: in a release build `reached` does nothing and the variable is ignored.

/// Every point, in the order a batch meets them. The crash-point test aborts at each.
pub const POINTS: [&str; 9] = [
    // The group of batches is in the write-ahead log (fdatasync done), not yet prepared.
    "wal-logged",
    // A prepared batch is in the redo log (fdatasync done), not yet in sled.
    "redo-logged",
    // Half of a batch's keys are in sled.
    "store-half-applied",
    // The whole batch is in sled, not yet answered.
    "store-applied",
    // The batch is answered.
    "answered",
    // A checkpoint made sled durable, and trimmed neither log.
    "checkpoint-flushed",
    // A checkpoint trimmed the write-ahead log.
    "checkpoint-trimmed",
    // The index applied a round of changes, not yet committed.
    "index-applied",
    // The index committed a round.
    "index-committed",
];

/// The points whose callers fail when `reached` answers `true`; the others only abort.
pub const FAILING: [&str; 1] = ["store-half-applied"];

/// The variable that arms a point.
pub const VARIABLE: &str = "POPMASTER_CRASH_POINT";

/// Reaching `point`: aborts the process, or answers `true` (fail here), when the variable
/// arms it for this time; `false` otherwise.
#[cfg(debug_assertions)]
pub fn reached(point: &'static str) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<(String, AtomicU64, bool)>> = OnceLock::new();
    debug_assert!(POINTS.contains(&point), "crash point {point} is not listed");
    let armed = ARMED.get_or_init(|| {
        let value = std::env::var(VARIABLE).ok()?;
        let (name, rest) = value.split_once(':')?;
        let (n, fail) = match rest.split_once(':') {
            Some((n, "fail")) => (n, true),
            Some(_) => return None,
            None => (rest, false),
        };
        assert!(
            !fail || FAILING.contains(&name),
            "{VARIABLE}: only {FAILING:?} can fail; {name} can only abort"
        );
        Some((name.to_string(), AtomicU64::new(n.parse().ok()?), fail))
    });
    if let Some((name, countdown, fail)) = armed {
        if name == point && countdown.fetch_sub(1, Ordering::SeqCst) == 1 {
            if *fail {
                eprintln!("crash point {point} reached: failing");
                return true;
            }
            eprintln!("crash point {point} reached: aborting");
            std::process::abort();
        }
    }
    false
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn reached(_point: &'static str) -> bool {
    false
}

//! Every call into sled goes through [`guard`], which turns sled's errors
//! and panics into [`LogError`]s: sled 0.34 panics on some damaged files
//! ("tried to serialize Uninitialized" when the start of its data file is
//! damaged), and a damaged log must never crash the tool nor print sled's
//! own words.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;

use super::LogError;

thread_local! {
    /// Set while this thread runs a sled operation inside [`guard`].
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Keep the panic hook from printing panics that [`guard`] catches: the
/// default hook writes sled's own panic message and source location to
/// stderr before the panic is turned into a [`LogError`] that says the same
/// in our words, and raw sled output must not reach the user. Panics
/// anywhere else, sled's background threads included, print as before.
fn silence_caught_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Run a sled operation, turning its errors and panics into [`LogError`]s:
/// sled 0.34 may panic on some damaged files, and a damaged log must never
/// crash the tool.
pub(crate) fn guard<T>(path: &Path, op: impl FnOnce() -> sled::Result<T>) -> Result<T, LogError> {
    silence_caught_panics();
    let outer = GUARDED.replace(true);
    let result = catch_unwind(AssertUnwindSafe(op));
    GUARDED.set(outer);
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(sled::Error::Corruption { at, .. })) => Err(LogError::Corrupt {
            path: path.to_path_buf(),
            detail: match at {
                Some(at) => format!("sled found a damaged record at {at}"),
                None => "sled found a damaged record".to_owned(),
            },
        }),
        Ok(Err(sled::Error::ReportableBug(detail))) => Err(LogError::Corrupt {
            path: path.to_path_buf(),
            detail,
        }),
        // A full disk or a read-only file is said as such, with the next step.
        Ok(Err(sled::Error::Io(source))) => Err(LogError::io("store events in", path, source)),
        Ok(Err(source)) => Err(LogError::Store {
            path: path.to_path_buf(),
            source,
        }),
        Err(panic) => Err(LogError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "the storage engine failed: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("panic")
            ),
        }),
    }
}

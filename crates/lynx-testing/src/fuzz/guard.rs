//! What a fuzz case may use, and how it is watched: the largest single allocation (seen
//! by [`CountingAlloc`] on the case's thread), the thread's CPU time, panics kept quiet
//! while a case runs, and a watchdog that aborts the process on a hung case.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

thread_local! {
    /// Largest single allocation allowed on this thread now; 0 = not measuring.
    static LIMIT: Cell<usize> = const { Cell::new(0) };
    /// Largest request seen on this thread while measuring.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// A global allocator that records, per thread, the largest single request made while a
/// fuzz case runs. Install it in each fuzz test binary (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct CountingAlloc;

fn note(size: usize) {
    let _ = LIMIT.try_with(|limit| {
        if limit.get() != 0 {
            let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Measures the largest single allocation `f` makes on this thread.
pub(super) fn measured<T>(limit: usize, f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|m| m.set(0));
    LIMIT.with(|l| l.set(limit.max(1)));
    let out = f();
    LIMIT.with(|l| l.set(0));
    (out, LARGEST.with(Cell::get))
}

/// CPU time of the calling thread (wall-clock time where the platform has no clock for
/// it).
pub(super) fn thread_cpu_time() -> Duration {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        }
    }
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed()
}

pub(super) fn panic_text(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Panics that the cases raise are reported by [`super::Target::run`]; the default hook would
/// print each one too.
pub(super) fn quiet_panics_while_measuring() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if LIMIT.try_with(Cell::get).unwrap_or(0) == 0 {
                default(info);
            }
        }));
    });
}

/// Fails loudly when the test binary forgot to install [`CountingAlloc`]: the
/// allocation checks would pass without looking.
pub(super) fn check_allocator() {
    let (v, largest) = measured(usize::MAX, || Vec::<u8>::with_capacity(777_777));
    drop(v);
    assert!(
        largest >= 777_777,
        "install lynx_testing::fuzz::CountingAlloc as the #[global_allocator] of this \
         test binary"
    );
}

/// Aborts the process when one case runs for a minute: a hang cannot be unwound.
pub(super) struct Watchdog {
    started_ms: Arc<AtomicU64>,
    what: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    const HANG: Duration = Duration::from_secs(60);

    pub(super) fn start(name: &str) -> Self {
        let started_ms = Arc::new(AtomicU64::new(u64::MAX));
        let what = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let (s, w, st, name) = (
            started_ms.clone(),
            what.clone(),
            stop.clone(),
            name.to_string(),
        );
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let begun = s.load(Ordering::Relaxed);
                let now = epoch.elapsed().as_millis() as u64;
                if begun != u64::MAX && now.saturating_sub(begun) > Self::HANG.as_millis() as u64 {
                    let what = w.lock().map(|w| w.clone()).unwrap_or_default();
                    eprintln!("fuzz {name}: a case hangs (over {:?}): {what}", Self::HANG);
                    std::process::abort();
                }
            }
        });
        Self {
            started_ms,
            what,
            stop,
            epoch,
            thread: Some(thread),
        }
    }

    pub(super) fn begin(&self, what: &str) {
        if let Ok(mut w) = self.what.lock() {
            w.clear();
            w.push_str(what);
        }
        self.started_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub(super) fn end(&self) {
        self.started_ms.store(u64::MAX, Ordering::Relaxed);
    }

    pub(super) fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

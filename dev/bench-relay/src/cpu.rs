//! `--same-cpu`: the harness and the relay on one CPU.
//!
//! Unpinned, every exchange between the relay and the harness (a runtime API request, a
//! PutEvents call, a log line) wakes a process on the other CPU, and on this kind of VM the
//! inter-processor interrupt and the idle CPU's wake-up are charged to the sender's system time:
//! a fifth of the relay's CPU, and the part that swings most with the host. On one CPU the
//! wake-up is local, as between a Lambda function of up to 1,769 MB (one vCPU) and the Runtime
//! API server in its microVM (docs/data-plane.md, *Cost*).

use anyhow::{Context as _, bail};

/// The calling thread's CPU set before [`Pinned::first_cpu`], put back on drop.
pub struct Pinned {
    previous: libc::cpu_set_t,
}

const SET_SIZE: usize = std::mem::size_of::<libc::cpu_set_t>();

impl Pinned {
    /// Pins the calling thread, and the threads and processes it starts from now on, to the
    /// first CPU it may run on.
    pub fn first_cpu() -> anyhow::Result<Pinned> {
        // SAFETY: cpu_set_t is plain data; zeroed is an empty set.
        let mut previous: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the set is SET_SIZE bytes and outlives the call.
        if unsafe { libc::sched_getaffinity(0, SET_SIZE, &raw mut previous) } != 0 {
            bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
        }
        let cpus = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
        // SAFETY: every index is below CPU_SETSIZE.
        let first = (0..cpus)
            .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &previous) })
            .context("the harness may run on no CPU")?;
        // SAFETY: as above.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: first < CPU_SETSIZE.
        unsafe { libc::CPU_SET(first, &mut one) };
        // SAFETY: the set is SET_SIZE bytes and outlives the call.
        if unsafe { libc::sched_setaffinity(0, SET_SIZE, &raw const one) } != 0 {
            bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
        Ok(Pinned { previous })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: the set is SET_SIZE bytes and outlives the call.
        unsafe { libc::sched_setaffinity(0, SET_SIZE, &raw const self.previous) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> usize {
        // SAFETY: as in Pinned::first_cpu.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::sched_getaffinity(0, SET_SIZE, &raw mut set) },
            0
        );
        // SAFETY: a valid set.
        usize::try_from(unsafe { libc::CPU_COUNT(&set) }).unwrap_or(0)
    }

    #[test]
    fn pinning_leaves_one_cpu_and_dropping_it_gives_the_others_back() {
        let before = allowed();
        let pinned = Pinned::first_cpu().expect("pinned");
        assert_eq!(allowed(), 1);
        drop(pinned);
        assert_eq!(allowed(), before);
    }
}

//! Zero-copy relaying for bulk transfers (Linux `splice(2)`).
//!
//! A direction that keeps filling its read buffer is moving bulk data; for
//! it the fast path switches from read/write through a user-space buffer to
//! `splice` through a pipe, so the bytes never leave the kernel. Small
//! request/response traffic stays on read/write: a pipe costs two file
//! descriptors and two extra syscalls per message, which only pays off for
//! large transfers.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for: 1 MiB lets one splice move a large burst;
/// Linux caps it at /proc/sys/fs/pipe-max-size for unprivileged users, and
/// if the request is refused the default 64 KiB pipe still works.
const PIPE_SIZE: usize = 1024 * 1024;

/// A non-blocking pipe used as the in-kernel buffer of one direction.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// Creates the pipe.
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; failure is harmless.
        let size = unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_SIZE as libc::c_int,
            )
        };
        let capacity = if size > 0 { size as usize } else { 64 * 1024 };
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Moves what the socket has (up to the pipe's capacity) into the pipe.
    /// `Ok(0)` is the end of the stream; `WouldBlock` means no data yet (the
    /// socket's readiness is cleared, so `readable()` waits again).
    pub fn fill(&self, src: &TcpStream) -> io::Result<usize> {
        src.try_io(Interest::READABLE, || {
            splice(src.as_raw_fd(), self.write.as_raw_fd(), self.capacity)
        })
    }

    /// Moves up to `len` bytes from the pipe to the socket.
    pub fn drain(&self, dst: &TcpStream, len: usize) -> io::Result<usize> {
        dst.try_io(Interest::WRITABLE, || {
            splice(self.read.as_raw_fd(), dst.as_raw_fd(), len)
        })
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call; null
    // offsets are required for sockets and pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

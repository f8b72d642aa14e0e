//! Owner ids stay unique in a child created by `fork`, which starts as a copy of its parent's
//! memory, id counter and random seed included.
//!
//! Its own test binary: the parent mints its next id right after the fork, and no other test
//! may mint ids in between.

// `fork`, `pipe`, `read`, `write`, `waitpid` and `_exit` are only reachable through libc.
#![allow(unsafe_code)]

use idempotent_core::store::OwnerId;

#[test]
fn forked_child_mints_other_owner_ids_than_its_parent() {
    // The parent has minted ids before it forks (its seed and counter are set).
    let before = OwnerId::new();

    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two file descriptors for `pipe` to fill.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    let [read_end, write_end] = fds;

    // SAFETY: the child only mints ids, writes them to the pipe and `_exit`s; it never
    // returns into the test harness or touches locks another thread may hold.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let mut ids = [0u8; 32];
        ids[..16].copy_from_slice(&OwnerId::new().as_u128().to_be_bytes());
        ids[16..].copy_from_slice(&OwnerId::new().as_u128().to_be_bytes());
        // SAFETY: writes 32 bytes from a live buffer, then ends the child at once.
        unsafe {
            libc::write(write_end, ids.as_ptr().cast(), ids.len());
            libc::_exit(0);
        }
    }

    let parent_next = [OwnerId::new(), OwnerId::new()];
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: reads into the unfilled tail of a live buffer.
        let read = unsafe {
            libc::read(
                read_end,
                bytes[filled..].as_mut_ptr().cast(),
                bytes.len() - filled,
            )
        };
        assert!(read > 0, "the child wrote its ids");
        filled += usize::try_from(read).unwrap();
    }
    let mut status = 0;
    // SAFETY: waits for the child this test forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let child = [
        OwnerId::from_u128(u128::from_be_bytes(bytes[..16].try_into().unwrap())),
        OwnerId::from_u128(u128::from_be_bytes(bytes[16..].try_into().unwrap())),
    ];

    for id in child {
        assert!(
            !parent_next.contains(&id) && id != before,
            "the child minted {id:?}, which its parent minted too ({parent_next:?}, {before:?})"
        );
    }
    assert_ne!(child[0], child[1]);
}

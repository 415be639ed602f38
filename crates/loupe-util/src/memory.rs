//! Large buffers that fill fast.
//!
//! A fresh allocation's pages are mapped and zeroed by the kernel one 4 KiB page at a time, on
//! first touch: for a probe's example matrix (hundreds of megabytes) that page-fault work took
//! more time than reading and converting the store. Asking for transparent huge pages on such a
//! buffer lets the kernel map it 2 MiB at a time.

/// An empty `Vec` with room for `capacity` elements whose memory the kernel is asked to back with
/// huge pages (Linux; elsewhere, and when the kernel declines, an ordinary `Vec`). Meant for
/// buffers of many megabytes that are filled once.
pub fn large_vec<T>(capacity: usize) -> Vec<T> {
    let v = Vec::with_capacity(capacity);
    #[cfg(target_os = "linux")]
    advise_huge_pages(v.as_ptr() as usize, capacity * std::mem::size_of::<T>());
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(start: usize, len: usize) {
    const HUGE_PAGE: usize = 2 << 20;
    // Only whole huge pages inside the allocation; a smaller buffer is left as it is.
    let first = start.next_multiple_of(HUGE_PAGE);
    let end = (start + len) / HUGE_PAGE * HUGE_PAGE;
    if end > first {
        // SAFETY: the range lies inside the Vec's allocation, and MADV_HUGEPAGE only changes how
        // the kernel backs those pages, not their contents. A refusal (no THP) is harmless.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_large_vec_holds_what_is_pushed() {
        let mut v = super::large_vec::<f32>(3 << 20);
        assert!(v.capacity() >= 3 << 20);
        v.extend((0..3 << 20).map(|i| i as f32));
        assert_eq!(v[12345], 12345.0);
    }
}

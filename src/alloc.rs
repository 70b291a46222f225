//! The allocator the binary runs on: mimalloc. glibc malloc was 8 % of the proxy's CPU
//! in profiles, with buffers freed on a different thread than the one that allocated
//! them. In the library so that the benches count allocations through the same one.

/// mimalloc, entered by its plain `mi_malloc` when the alignment asked for is what
/// `mi_malloc` gives anyway (std's rule for `malloc`). The `mimalloc` crate sends
/// every allocation through `mi_malloc_aligned`, whose checks and generic paths were
/// 5 % of a proxied request's instructions at ~25 allocations per request (callgrind,
/// README § Performance). Hand-written because that is all it is: four calls.
pub struct Mimalloc;

/// The alignment `mi_malloc` guarantees for blocks at least this large.
const MI_ALIGN: usize = 16;

fn plain(layout: std::alloc::Layout, size: usize) -> bool {
    layout.align() <= MI_ALIGN && layout.align() <= size
}

// SAFETY: every path hands the layout's size and alignment to mimalloc, which returns
// null or a block of that size and alignment; `mi_free` frees blocks from either entry.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        match plain(layout, layout.size()) {
            true => mi::mi_malloc(layout.size()).cast(),
            false => mi::mi_malloc_aligned(layout.size(), layout.align()).cast(),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        match plain(layout, layout.size()) {
            true => mi::mi_zalloc(layout.size()).cast(),
            false => mi::mi_zalloc_aligned(layout.size(), layout.align()).cast(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys as mi;
        match plain(layout, new_size) {
            true => mi::mi_realloc(ptr.cast(), new_size).cast(),
            false => mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout};

    #[test]
    fn every_block_has_the_alignment_asked_for_through_both_entries_and_realloc() {
        for (size, align) in [
            (1, 1),
            (8, 8),
            (24, 8),
            (16, 16),
            (8, 16),
            (100, 64),
            (4096, 4096),
        ] {
            let layout = Layout::from_size_align(size, align).unwrap();
            unsafe {
                let p = Mimalloc.alloc(layout);
                assert!(
                    !p.is_null() && p as usize % align == 0,
                    "{size} B at {align}"
                );
                p.write_bytes(0xab, size);
                let q = Mimalloc.realloc(p, layout, size * 3);
                assert!(
                    !q.is_null() && q as usize % align == 0,
                    "grown {size} B at {align}"
                );
                assert_eq!(*q, 0xab, "realloc keeps the bytes");
                Mimalloc.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                let z = Mimalloc.alloc_zeroed(layout);
                assert!(z as usize % align == 0 && *z == 0);
                Mimalloc.dealloc(z, layout);
            }
        }
    }
}

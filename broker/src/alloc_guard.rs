//! A global allocator that keeps a malformed request from aborting the process.
//!
//! The protocol decoder sizes vectors from the element count a request claims. A hostile count
//! (say 2^31 topics in a 40-byte frame) asks for hundreds of GiB; the system allocator refuses and
//! Rust aborts the whole broker. Here, very large requests are served by `mmap(MAP_NORESERVE)`:
//! address space only, no memory committed until touched. The decoder then fails on the missing
//! bytes after touching a few pages, the vector is dropped, and the mapping is returned. Normal
//! allocations go to the system allocator unchanged.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at or above this size are mapped lazily.
const LAZY_THRESHOLD: usize = 1 << 30;
const PAGE: usize = 4096;

pub struct GuardedAlloc;

fn lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_THRESHOLD && layout.align() <= PAGE
}

/// A fresh lazily committed anonymous mapping of `size` bytes, or null when the kernel refuses.
fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory; the result is checked for MAP_FAILED before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast::<u8>()
    }
}

// SAFETY: every block handed out is either the system allocator's (small layouts, returned to
// it) or a private mapping of at least `layout.size()` bytes, page-aligned (so aligned for any
// layout `lazy` accepts), returned with munmap/mremap; `lazy` sends a layout the same way on
// allocation and deallocation, so each block goes back to where it came from.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if lazy(&layout) {
            map(layout.size())
        } else {
            // SAFETY: the caller's contract for `alloc` (non-zero size) is passed on unchanged.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if lazy(&layout) {
            // Fresh anonymous mappings are already zeroed.
            map(layout.size())
        } else {
            // SAFETY: the caller's contract for `alloc_zeroed` is passed on unchanged.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if lazy(&layout) {
            // SAFETY: the caller gives back a block this allocator returned for `layout`; lazy
            // layouts were mapped by `map` with exactly `layout.size()` bytes.
            unsafe { libc::munmap(ptr.cast::<libc::c_void>(), layout.size()) };
        } else {
            // SAFETY: small layouts came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to `layout.align()`, does not
        // overflow isize, and the alignment is a valid layout's.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !lazy(&layout) && !lazy(&new_layout) {
            // SAFETY: both layouts are small: the block came from `System`, the caller's
            // contract for `realloc` is passed on.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if lazy(&layout) && lazy(&new_layout) {
            // Move the mapping instead of copying (untouched pages cost nothing).
            // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by `map`; MREMAP_MAYMOVE
            // returns a new mapping (or MAP_FAILED, leaving the old one intact).
            let p = unsafe {
                libc::mremap(
                    ptr.cast::<libc::c_void>(),
                    layout.size(),
                    new_size,
                    libc::MREMAP_MAYMOVE,
                )
            };
            return if p == libc::MAP_FAILED {
                std::ptr::null_mut()
            } else {
                p.cast::<u8>()
            };
        }
        // SAFETY: `new_layout` has a non-zero size (realloc's contract).
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            // SAFETY: both blocks are live, distinct, and at least `min(old, new)` bytes long;
            // the old block is then freed with the layout it was allocated with.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_lazy_allocation_round_trips() {
        let a = GuardedAlloc;
        // SAFETY: every pointer is used within the layout it was allocated with and freed once
        // with its current layout.
        unsafe {
            let layout = Layout::from_size_align(200 << 30, 8).unwrap();
            let p = a.alloc(layout);
            assert!(
                !p.is_null(),
                "200 GiB of address space must be available lazily"
            );
            *p = 7;
            assert_eq!(*p, 7);
            let p2 = a.realloc(p, layout, 300 << 30);
            assert_eq!(*p2, 7);
            a.dealloc(p2, Layout::from_size_align(300 << 30, 8).unwrap());
            let small = Layout::from_size_align(64, 8).unwrap();
            let q = a.alloc(small);
            let q = a.realloc(q, small, 2 << 30);
            assert!(!q.is_null());
            a.dealloc(q, Layout::from_size_align(2 << 30, 8).unwrap());
        }
    }
}

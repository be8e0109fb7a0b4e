//! Visibility extensions in flight. A release (visibility 0) that races an
//! extension of the same message may reach the source first and then be
//! undone by it, hiding a released Command for a whole visibility timeout;
//! so a release of a receipt being extended is remembered, and made again
//! once the extension has answered.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::ports::Receipt;

#[derive(Debug, Default)]
pub(super) struct Extensions {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    extending: HashSet<Receipt>,
    released_meanwhile: Vec<Receipt>,
}

impl Extensions {
    /// `receipts` are about to be extended.
    pub(super) fn begin(&self, receipts: impl IntoIterator<Item = Receipt>) {
        self.lock().extending.extend(receipts);
    }

    /// `receipts` are being released; those with an extension in flight are
    /// remembered for [`Extensions::end`].
    pub(super) fn releasing(&self, receipts: &[Receipt]) {
        let mut inner = self.lock();
        if inner.extending.is_empty() {
            return;
        }
        let caught: Vec<Receipt> = receipts
            .iter()
            .filter(|r| inner.extending.contains(*r))
            .cloned()
            .collect();
        inner.released_meanwhile.extend(caught);
    }

    /// The extension of `receipts` has answered: returns those released
    /// meanwhile, to be released again.
    pub(super) fn end(&self, receipts: &[Receipt]) -> Vec<Receipt> {
        let mut inner = self.lock();
        for receipt in receipts {
            inner.extending.remove(receipt);
        }
        if inner.released_meanwhile.is_empty() {
            return Vec::new();
        }
        let (again, keep): (Vec<Receipt>, Vec<Receipt>) = inner
            .released_meanwhile
            .drain(..)
            .partition(|r| receipts.contains(r));
        inner.released_meanwhile = keep;
        again
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_during_an_extension_is_made_again_after_it() {
        let ext = Extensions::default();
        let (a, b) = (Receipt::new("a"), Receipt::new("b"));
        ext.releasing(std::slice::from_ref(&a));
        ext.begin([a.clone(), b.clone()]);
        ext.releasing(&[b.clone(), Receipt::new("c")]);
        assert_eq!(ext.end(&[a.clone(), b.clone()]), vec![b]);
        // Nothing is left over for a later extension.
        ext.begin([a.clone()]);
        assert!(ext.end(&[a]).is_empty());
    }
}

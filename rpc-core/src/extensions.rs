//! [`Extensions`]: values of any type attached to a call, one per type.
//!
//! Interceptors use them to hand things to handlers (an authenticated caller's claims, a
//! request id) without the handler's signature knowing about the interceptor.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;

/// A map from type to one value of that type.
///
/// ```
/// use rpc_core::Extensions;
///
/// #[derive(Debug, PartialEq)]
/// struct UserId(u64);
///
/// let mut ext = Extensions::new();
/// ext.insert(UserId(7));
/// assert_eq!(ext.get::<UserId>(), Some(&UserId(7)));
/// assert_eq!(ext.remove::<UserId>(), Some(UserId(7)));
/// assert!(ext.get::<UserId>().is_none());
/// ```
#[derive(Default)]
pub struct Extensions {
    // Allocated on first insert: most calls carry none.
    map: Option<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
}

impl Extensions {
    /// An empty map; allocates nothing.
    pub const fn new() -> Extensions {
        Extensions { map: None }
    }

    /// Stores `value`, returning the previous value of its type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        self.map
            .get_or_insert_with(HashMap::new)
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.downcast().ok().map(|old| *old))
    }

    /// The value of type `T`, if any.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.map.as_ref()?.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// The value of type `T`, to change.
    pub fn get_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        self.map.as_mut()?.get_mut(&TypeId::of::<T>())?.downcast_mut()
    }

    /// Removes and returns the value of type `T`.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        self.map.as_mut()?.remove(&TypeId::of::<T>()).and_then(|old| old.downcast().ok().map(|old| *old))
    }

    /// Whether the map holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.as_ref().is_none_or(HashMap::is_empty)
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions").field("len", &self.map.as_ref().map_or(0, HashMap::len)).finish()
    }
}

//! [`PrefixCache`]: one prefix, one type.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::ReferenceDataCache;
use crate::envelope::CacheEntry;
use crate::error::{BoxError, Result};
use crate::prefix::CacheKeyPrefix;
use crate::stats::{CacheCounters, CacheStats};
use crate::warm::{WarmHandle, WarmOptions};

/// A typed view of one prefix of a [`ReferenceDataCache`], from
/// [`ReferenceDataCache::prefix`] or [`ReferenceDataCache::typed`]: every
/// read decodes `T`, every write takes a `T`, so a service holding a
/// `PrefixCache<Part>` cannot read a part as a user.
pub struct PrefixCache<T> {
    cache: ReferenceDataCache,
    prefix: CacheKeyPrefix,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Clone for PrefixCache<T> {
    fn clone(&self) -> Self {
        Self::new(self.cache.clone(), self.prefix.clone())
    }
}

impl<T> fmt::Debug for PrefixCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefixCache")
            .field("prefix", &self.prefix)
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

/// Serialises a `V: Borrow<T>` as the `T` it borrows.
struct As<V, T: ?Sized>(V, PhantomData<fn(&T)>);

impl<V: Borrow<T>, T: Serialize + ?Sized> Serialize for As<V, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.borrow().serialize(serializer)
    }
}

impl<T> PrefixCache<T> {
    pub(crate) fn new(cache: ReferenceDataCache, prefix: CacheKeyPrefix) -> Self {
        Self {
            cache,
            prefix,
            _type: PhantomData,
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &CacheKeyPrefix {
        &self.prefix
    }

    /// The untyped cache.
    pub fn cache(&self) -> &ReferenceDataCache {
        &self.cache
    }
}

impl<T: Serialize + DeserializeOwned> PrefixCache<T> {
    /// See [`ReferenceDataCache::get`].
    ///
    /// # Errors
    /// As [`ReferenceDataCache::get`].
    pub async fn get(&self, id: &str) -> Result<Option<T>> {
        self.cache.get(&self.prefix, id).await
    }

    /// See [`ReferenceDataCache::get_entry`].
    ///
    /// # Errors
    /// As [`ReferenceDataCache::get_entry`].
    pub async fn get_entry(&self, id: &str) -> Result<Option<CacheEntry<T>>> {
        self.cache.get_entry(&self.prefix, id).await
    }

    /// See [`ReferenceDataCache::get_many`].
    ///
    /// # Errors
    /// As [`ReferenceDataCache::get_many`].
    pub async fn get_many<I, S>(&self, ids: I) -> Result<HashMap<String, T>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.cache.get_many(&self.prefix, ids).await
    }

    /// See [`ReferenceDataCache::set`].
    ///
    /// # Errors
    /// As [`ReferenceDataCache::set`].
    pub async fn set(&self, id: &str, value: &T, ttl: Option<Duration>) -> Result<()> {
        self.cache.set(&self.prefix, id, value, ttl).await
    }

    /// See [`ReferenceDataCache::set_versioned`].
    ///
    /// # Errors
    /// As [`ReferenceDataCache::set`].
    pub async fn set_versioned(
        &self,
        id: &str,
        value: &T,
        ttl: Option<Duration>,
        version: &str,
    ) -> Result<()> {
        self.cache
            .set_versioned(&self.prefix, id, value, ttl, version)
            .await
    }

    /// See [`ReferenceDataCache::set_many`].
    ///
    /// # Errors
    /// As [`ReferenceDataCache::set_many`].
    pub async fn set_many<I, K, V>(&self, entries: I, ttl: Option<Duration>) -> Result<usize>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Borrow<T>,
    {
        let entries = entries
            .into_iter()
            .map(|(id, value)| (id, As::<V, T>(value, PhantomData)));
        self.cache.set_many(&self.prefix, entries, ttl).await
    }

    /// See [`ReferenceDataCache::invalidate`].
    ///
    /// # Errors
    /// As [`ReferenceDataCache::invalidate`].
    pub async fn invalidate(&self, id: &str) -> Result<bool> {
        self.cache.invalidate(&self.prefix, id).await
    }

    /// See [`ReferenceDataCache::invalidate_many`].
    ///
    /// # Errors
    /// As [`ReferenceDataCache::invalidate_many`].
    pub async fn invalidate_many<I, S>(&self, ids: I) -> Result<u64>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.cache.invalidate_many(&self.prefix, ids).await
    }

    /// See [`ReferenceDataCache::invalidate_all`].
    ///
    /// # Errors
    /// As [`ReferenceDataCache::invalidate_all`].
    pub async fn invalidate_all(&self) -> Result<u64> {
        self.cache.invalidate_all(&self.prefix).await
    }

    /// See [`ReferenceDataCache::get_or_load`].
    ///
    /// # Errors
    /// As [`ReferenceDataCache::get_or_load`].
    pub async fn get_or_load<F, Fut, E>(&self, id: &str, loader: F) -> Result<Option<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Option<T>, E>>,
        E: Into<BoxError>,
    {
        self.cache.get_or_load(&self.prefix, id, loader).await
    }

    /// See [`ReferenceDataCache::warm_cache`].
    ///
    /// # Errors
    /// As [`ReferenceDataCache::warm_cache`].
    pub async fn warm<F, Fut, E>(&self, loader: F, options: WarmOptions) -> Result<WarmHandle>
    where
        T: Send + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Vec<(String, T)>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.cache.warm_cache(&self.prefix, loader, options).await
    }

    /// See [`ReferenceDataCache::stats`].
    ///
    /// # Errors
    /// As [`ReferenceDataCache::stats`].
    pub async fn stats(&self) -> Result<CacheStats> {
        self.cache.stats(&self.prefix).await
    }

    /// See [`ReferenceDataCache::counters`].
    pub fn counters(&self) -> CacheCounters {
        self.cache.counters(&self.prefix)
    }
}

//! Credentials kept until shortly before they expire, as the SDK's identity
//! cache does: asked of the configuration's provider (the default chain:
//! environment, profiles with SSO or `credential_process`, web identity,
//! ECS, IMDS) once per renewal.
//!
//! [`Clients::from_config`](crate::sdk::Clients::from_config) puts one in
//! front of the configured provider, so that the SDK clients and the lean
//! SQS client (which signs with the configuration it is given) renew through
//! the same cache: one fetch per renewal for all of them, not one each.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;

/// Credentials with less than this left are renewed before use (the SDK's
/// identity cache renews 5 to 10 s ahead).
const RENEW_AHEAD: Duration = Duration::from_secs(10);

/// A provider's credentials, cached.
#[derive(Debug)]
pub(crate) struct CachedCredentials {
    provider: SharedCredentialsProvider,
    current: Mutex<Option<Credentials>>,
    /// One renewal at a time: concurrent calls wait for it rather than
    /// all asking the provider.
    renewing: tokio::sync::Mutex<()>,
}

impl CachedCredentials {
    pub(crate) fn new(provider: SharedCredentialsProvider) -> Self {
        Self {
            provider,
            current: Mutex::new(None),
            renewing: tokio::sync::Mutex::new(()),
        }
    }

    /// Credentials valid for at least [`RENEW_AHEAD`] (or without expiry).
    pub(crate) async fn get(&self) -> Result<Credentials, String> {
        self.renewed()
            .await
            .map_err(|e| format!("no credentials: {}", crate::classify::chain(&e)))
    }

    async fn renewed(&self) -> Result<Credentials, CredentialsError> {
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let _renewing = self.renewing.lock().await;
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let credentials = self.provider.provide_credentials().await?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(credentials.clone());
        Ok(credentials)
    }

    fn fresh(&self) -> Option<Credentials> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let credentials = current.as_ref()?;
        match credentials.expiry() {
            None => Some(credentials.clone()),
            Some(expiry) => {
                let renew_at = expiry.checked_sub(RENEW_AHEAD).unwrap_or(expiry);
                (SystemTime::now() < renew_at).then(|| credentials.clone())
            }
        }
    }
}

impl ProvideCredentials for CachedCredentials {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(self.renewed())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use aws_credential_types::provider::future;

    use super::*;

    /// Issues credentials valid for `lifetime`, counting how often it is asked.
    #[derive(Debug)]
    struct Counting {
        lifetime: Option<Duration>,
        asked: Arc<AtomicUsize>,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.asked.fetch_add(1, Ordering::SeqCst);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKID{n}"),
                "secret",
                None,
                self.lifetime.map(|l| SystemTime::now() + l),
                "test",
            )))
        }
    }

    fn cache_of(lifetime: Option<Duration>) -> (CachedCredentials, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let provider = Counting {
            lifetime,
            asked: asked.clone(),
        };
        (
            CachedCredentials::new(SharedCredentialsProvider::new(provider)),
            asked,
        )
    }

    #[tokio::test]
    async fn lasting_credentials_are_asked_for_once() {
        let (cache, asked) = cache_of(Some(Duration::from_secs(3600)));
        for _ in 0..5 {
            assert_eq!(cache.get().await.unwrap().access_key_id(), "AKID0");
        }
        let (cache, static_asked) = cache_of(None);
        for _ in 0..5 {
            cache.get().await.unwrap();
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert_eq!(static_asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn credentials_about_to_expire_are_renewed_before_use() {
        // Less than RENEW_AHEAD left from the start: every use renews.
        let (cache, asked) = cache_of(Some(RENEW_AHEAD / 2));
        assert_eq!(cache.get().await.unwrap().access_key_id(), "AKID0");
        assert_eq!(cache.get().await.unwrap().access_key_id(), "AKID1");
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }
}

//! Why an operator's request to the brain (replace, adopt, bootstrap) did not
//! go through: refused as asked (the text says why and what to do), the store
//! failed, or a node's API did not answer as it must.

#[derive(Debug, thiserror::Error)]
pub(crate) enum BrainError {
    /// Not carried out as asked; the message explains and suggests the fix.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// `inventory-overrides.yaml` (identity moves) failed.
    #[error(transparent)]
    Overrides(#[from] crate::model::inventory::OverridesError),
    /// kiln could not make the cluster's admin client certificate.
    #[error("the cluster's admin credentials: {0}")]
    Credentials(String),
    /// A Talos or Kubernetes API call failed.
    #[error("{0}")]
    Remote(String),
}

impl BrainError {
    pub(crate) fn remote(e: impl std::fmt::Display) -> BrainError {
        BrainError::Remote(e.to_string())
    }
}

/// The operator-facing messages the brain composes are refusals.
impl From<String> for BrainError {
    fn from(s: String) -> BrainError {
        BrainError::Refused(s)
    }
}

impl From<&str> for BrainError {
    fn from(s: &str) -> BrainError {
        BrainError::Refused(s.to_string())
    }
}

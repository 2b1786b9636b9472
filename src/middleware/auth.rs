//! The `auth` middleware: users with passwords or tokens from `[auth]`.
//!
//! Off by default. When `auth.enabled = true`, every request must carry
//! credentials ([`Credentials`]) that match a configured user: a password
//! (HTTP Basic, Redis `AUTH user pass`), a bearer token (HTTP
//! `Authorization: Bearer`, gRPC metadata), or — for protocols that send a
//! password without a user name (Redis `AUTH pass`) — the user named
//! `default` or `auth.requirepass`. Comparisons run in constant time.
//!
//! ```toml
//! [auth]
//! enabled = true
//! requirepass = "s3cret"          # optional, like Redis' requirepass
//! users = [
//!   { name = "alice", password = "wonderland" },
//!   { name = "ci", token = "f00dfeed" },
//! ]
//! ```

use gerdu_api::{
    Call, Credentials, Middleware, MiddlewareContext, MiddlewarePlugin, Pipeline, PipelineError, PluginError,
    register_middleware,
};
use serde::Deserialize;

/// One user.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User name.
    pub name: String,
    /// Password, if the user logs in with one.
    #[serde(default)]
    pub password: Option<String>,
    /// Bearer token, if the user presents one.
    #[serde(default)]
    pub token: Option<String>,
}

/// `[auth]` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require credentials on every request.
    pub enabled: bool,
    /// A password without a user name (Redis `requirepass`).
    pub requirepass: Option<String>,
    /// The users.
    pub users: Vec<User>,
}

fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AuthConfig {
    /// Whether the credentials identify a user.
    pub fn verify(&self, creds: &Credentials) -> bool {
        match creds {
            Credentials::Token(t) => self.users.iter().any(|u| u.token.as_deref().is_some_and(|x| ct_eq(x, t))),
            Credentials::Password { user: None, password } => {
                self.requirepass.as_deref().is_some_and(|p| ct_eq(p, password))
                    || self
                        .users
                        .iter()
                        .any(|u| u.name == "default" && u.password.as_deref().is_some_and(|p| ct_eq(p, password)))
            }
            Credentials::Password { user: Some(name), password } => {
                self.users.iter().any(|u| &u.name == name && u.password.as_deref().is_some_and(|p| ct_eq(p, password)))
            }
        }
    }
}

struct Auth {
    config: std::sync::Arc<AuthConfig>,
}

impl Middleware for Auth {
    fn layer(&self, inner: Pipeline) -> Pipeline {
        if !self.config.enabled {
            return inner;
        }
        let config = self.config.clone();
        Pipeline::from_fn(move |req| match req.ctx.credentials.as_deref() {
            None => Call::ready(Err(PipelineError::Unauthenticated)),
            Some(c) if config.verify(c) => inner.call(req),
            Some(_) => Call::ready(Err(PipelineError::BadCredentials)),
        })
    }
}

fn build(ctx: &MiddlewareContext<'_>) -> Result<Box<dyn Middleware>, PluginError> {
    let config: AuthConfig = gerdu_api::plugin::section(ctx.config, "auth")?;
    if config.enabled && config.users.is_empty() && config.requirepass.is_none() {
        return Err(PluginError::Config("auth.enabled: no users and no requirepass configured".into()));
    }
    for u in &config.users {
        if u.password.is_none() && u.token.is_none() {
            return Err(PluginError::Config(format!("auth.users: user {:?} has neither password nor token", u.name)));
        }
    }
    Ok(Box::new(Auth { config: std::sync::Arc::new(config) }))
}

register_middleware!(MiddlewarePlugin {
    name: "auth",
    description: "users with passwords or bearer tokens from [auth]; off unless auth.enabled",
    build,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_passwords_tokens_and_requirepass() {
        let c = AuthConfig {
            enabled: true,
            requirepass: Some("rp".into()),
            users: vec![
                User { name: "alice".into(), password: Some("pw".into()), token: None },
                User { name: "ci".into(), password: None, token: Some("tok".into()) },
            ],
        };
        let pw = |u: Option<&str>, p: &str| Credentials::Password { user: u.map(Into::into), password: p.into() };
        assert!(c.verify(&pw(Some("alice"), "pw")));
        assert!(!c.verify(&pw(Some("alice"), "px")));
        assert!(!c.verify(&pw(Some("bob"), "pw")));
        assert!(c.verify(&pw(None, "rp")));
        assert!(!c.verify(&pw(None, "pw")));
        assert!(c.verify(&Credentials::Token("tok".into())));
        assert!(!c.verify(&Credentials::Token("to".into())));
        assert!(!c.verify(&pw(Some("ci"), "tok")));
    }
}

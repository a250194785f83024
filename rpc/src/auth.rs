//! Who a token says the caller is. A login presents a JWT; `Verifier::verify` checks it against
//! the configured keys and returns the `Identity` (tenant and role) the server binds to the
//! capability it hands out. The key, not the token, decides the algorithm: a token signed with a
//! different algorithm than its key's (algorithm confusion), `alg: none`, an unknown key id, a
//! bad signature, an expired or not-yet-valid token, or a wrong issuer or audience is refused.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Writer,
    Admin,
    /// Cluster-wide operations; no access to any tenant's rows.
    Operator,
    /// A cluster member: registers with coordinators, and replicates tenants' writes and
    /// forwards their queries to its peers (`Gateway.peerLogin`). Held by nodes, not people.
    Node,
}

impl Role {
    pub fn can_write(self) -> bool {
        matches!(self, Role::Writer | Role::Admin)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Node => "node",
        }
    }

    /// Roles whose tokens name no tenant.
    pub fn cluster_wide(self) -> bool {
        matches!(self, Role::Operator | Role::Node)
    }
}

impl std::str::FromStr for Role {
    type Err = AuthError;
    fn from_str(text: &str) -> Result<Role, AuthError> {
        match text {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "node" => Ok(Role::Node),
            other => Err(AuthError::Invalid(format!(
                "unknown role {other:?} (expected reader, writer, admin, operator or node)"
            ))),
        }
    }
}

/// The claims Tessera reads from a token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// Required for tenant roles; absent for `operator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

/// What a verified token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    /// `None` only for operators.
    pub tenant: Option<String>,
    pub role: Role,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// Shared secret (the bytes of the secret).
    Hs256,
    /// Ed25519 public key, PEM.
    EdDsa,
    /// RSA public key, PEM.
    Rs256,
}

impl KeyKind {
    fn algorithm(self) -> Algorithm {
        match self {
            KeyKind::Hs256 => Algorithm::HS256,
            KeyKind::EdDsa => Algorithm::EdDSA,
            KeyKind::Rs256 => Algorithm::RS256,
        }
    }
}

/// One verification key. Several may be configured (rotation); tokens name theirs by `kid`.
#[derive(Clone)]
pub struct KeySpec {
    pub id: Option<String>,
    pub kind: KeyKind,
    pub material: Vec<u8>,
}

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("KeySpec")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    pub keys: Vec<KeySpec>,
    /// Clock skew tolerated on `nbf` (not on `exp`: see `expired`).
    pub leeway_seconds: u64,
}

pub const DEFAULT_ISSUER: &str = "tessera";
pub const DEFAULT_AUDIENCE: &str = "tessera";

impl AuthConfig {
    pub fn new(keys: Vec<KeySpec>) -> AuthConfig {
        AuthConfig {
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            keys,
            leeway_seconds: 30,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The token is not acceptable; the text says why (safe to show the client).
    #[error("{0}")]
    Rejected(String),
    /// Bad configuration or arguments.
    #[error("{0}")]
    Invalid(String),
}

struct Key {
    id: Option<String>,
    algorithm: Algorithm,
    decoding: DecodingKey,
}

pub struct Verifier {
    keys: Vec<Key>,
    issuer: String,
    audience: String,
    leeway_seconds: u64,
}

impl Verifier {
    pub fn new(config: AuthConfig) -> Result<Verifier, AuthError> {
        if config.keys.is_empty() {
            return Err(AuthError::Invalid(
                "no token verification key configured".into(),
            ));
        }
        let mut keys = Vec::with_capacity(config.keys.len());
        for spec in config.keys {
            let label = spec.id.clone().unwrap_or_else(|| "(no id)".into());
            let decoding = match spec.kind {
                KeyKind::Hs256 => {
                    if spec.material.len() < 32 {
                        return Err(AuthError::Invalid(format!(
                            "HS256 secret {label} is {} bytes; use at least 32",
                            spec.material.len()
                        )));
                    }
                    Ok(DecodingKey::from_secret(&spec.material))
                }
                KeyKind::EdDsa => DecodingKey::from_ed_pem(&spec.material),
                KeyKind::Rs256 => DecodingKey::from_rsa_pem(&spec.material),
            }
            .map_err(|e| AuthError::Invalid(format!("key {label}: {e}")))?;
            if keys.iter().any(|k: &Key| k.id == spec.id) {
                return Err(AuthError::Invalid(format!("two keys share the id {label}")));
            }
            keys.push(Key {
                id: spec.id,
                algorithm: spec.kind.algorithm(),
                decoding,
            });
        }
        Ok(Verifier {
            keys,
            issuer: config.issuer,
            audience: config.audience,
            leeway_seconds: config.leeway_seconds,
        })
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let reject = |text: String| AuthError::Rejected(text);
        if token.len() > 16 * 1024 {
            return Err(reject(format!(
                "token is {} bytes; the limit is 16 KiB",
                token.len()
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| reject(format!("malformed token header ({e})")))?;
        let key = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.id.as_deref() == Some(kid.as_str()))
                .ok_or_else(|| reject(format!("unknown key id {kid:?}")))?,
            None if self.keys.len() == 1 => &self.keys[0],
            None => {
                return Err(reject(
                    "token names no key id (kid) and the server has several keys".into(),
                ))
            }
        };
        if header.alg != key.algorithm {
            return Err(reject(format!(
                "token algorithm {:?} does not match its key's algorithm {:?}",
                header.alg, key.algorithm
            )));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        // The leeway is for `nbf` only (an issuer's clock a little ahead of ours); `exp` is
        // checked below by `expired`, the same rule every call of the capability applies.
        validation.validate_exp = false;
        validation.leeway = self.leeway_seconds;
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                reject(match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired".into(),
                    ErrorKind::ImmatureSignature => "token not yet valid (nbf)".into(),
                    ErrorKind::InvalidSignature => "token signature does not verify".into(),
                    ErrorKind::InvalidIssuer => {
                        format!("token issuer is not {:?}", self.issuer)
                    }
                    ErrorKind::InvalidAudience => {
                        format!("token audience is not {:?}", self.audience)
                    }
                    ErrorKind::MissingRequiredClaim(claim) => {
                        format!("token lacks the {claim} claim")
                    }
                    other => format!("invalid token ({other:?})"),
                })
            })?;
        let claims = data.claims;
        if expired(claims.exp) {
            return Err(reject("token expired".into()));
        }
        match (&claims.tenant, claims.role) {
            (None, role) if role.cluster_wide() => {}
            (Some(_), role) if role.cluster_wide() => {
                return Err(reject(format!(
                    "{} tokens must not name a tenant",
                    role.name()
                )))
            }
            (None, role) => {
                return Err(reject(format!(
                    "a {} token must name a tenant",
                    role.name()
                )))
            }
            (Some(tenant), _) => {
                tessera_storage_engine::table::manifest::validate_name("tenant", tenant)
                    .map_err(|e| reject(format!("token tenant: {e}")))?
            }
        }
        Ok(Identity {
            subject: claims.sub,
            tenant: claims.tenant,
            role: claims.role,
            expires_at: claims.exp,
        })
    }
}

/// Whether a token (or the capability it produced) has expired: from the second after `exp`
/// on, with no leeway. Login and every later call use this one rule, so a capability login
/// returns is good until `exp`.
pub fn expired(exp: i64) -> bool {
    now_seconds() > exp
}

/// Seconds since the Unix epoch.
pub fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What to put in a minted token.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub subject: String,
    pub tenant: Option<String>,
    pub role: Role,
    pub ttl_seconds: i64,
    pub key_id: Option<String>,
    pub issuer: String,
    pub audience: String,
}

/// Signs a token with `key` (HS256 secret bytes, or an Ed25519/RSA private key in PEM).
pub fn mint(request: &TokenRequest, kind: KeyKind, key: &[u8]) -> Result<String, AuthError> {
    match (request.role, &request.tenant) {
        (role, Some(_)) if role.cluster_wide() => {
            return Err(AuthError::Invalid(format!(
                "a {} token takes no tenant",
                role.name()
            )))
        }
        (role, None) if role.cluster_wide() => {}
        (_, None) => return Err(AuthError::Invalid("this role needs a tenant".into())),
        (_, Some(tenant)) => {
            tessera_storage_engine::table::manifest::validate_name("tenant", tenant)
                .map_err(|e| AuthError::Invalid(e.to_string()))?
        }
    }
    let now = now_seconds();
    let claims = Claims {
        sub: request.subject.clone(),
        tenant: request.tenant.clone(),
        role: request.role,
        iss: request.issuer.clone(),
        aud: request.audience.clone(),
        exp: now + request.ttl_seconds,
        nbf: Some(now),
        iat: Some(now),
    };
    let mut header = Header::new(kind.algorithm());
    header.kid = request.key_id.clone();
    let encoding = match kind {
        KeyKind::Hs256 => Ok(EncodingKey::from_secret(key)),
        KeyKind::EdDsa => EncodingKey::from_ed_pem(key),
        KeyKind::Rs256 => EncodingKey::from_rsa_pem(key),
    }
    .map_err(|e| AuthError::Invalid(format!("signing key: {e}")))?;
    jsonwebtoken::encode(&header, &claims, &encoding)
        .map_err(|e| AuthError::Invalid(format!("signing failed: {e}")))
}

/// Parses durations such as `90s`, `15m`, `1h`, `7d` (a bare number is seconds).
pub fn parse_ttl(text: &str) -> Result<i64, AuthError> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: i64 = number.parse().map_err(|_| {
        AuthError::Invalid(format!("bad duration {text:?} (e.g. 90s, 15m, 1h, 7d)"))
    })?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(AuthError::Invalid(format!(
                "bad duration unit in {text:?} (s, m, h or d)"
            )))
        }
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| AuthError::Invalid(format!("duration {text:?} is too long")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn request(role: Role, tenant: Option<&str>) -> TokenRequest {
        TokenRequest {
            subject: "test".into(),
            tenant: tenant.map(str::to_owned),
            role,
            ttl_seconds: 3600,
            key_id: None,
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
        }
    }

    fn hs_verifier() -> Verifier {
        Verifier::new(AuthConfig::new(vec![KeySpec {
            id: None,
            kind: KeyKind::Hs256,
            material: SECRET.to_vec(),
        }]))
        .unwrap()
    }

    fn rejected(verifier: &Verifier, token: &str) -> String {
        match verifier.verify(token) {
            Err(AuthError::Rejected(text)) => text,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn b64(bytes: &[u8]) -> String {
        use std::fmt::Write;
        // URL-safe base64 without padding, enough for hand-made tokens.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |acc, &b| acc << 8 | b as u32) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                let _ = out.write_char(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn round_trip_names_tenant_and_role() {
        let token = mint(&request(Role::Writer, Some("acme")), KeyKind::Hs256, SECRET).unwrap();
        let identity = hs_verifier().verify(&token).unwrap();
        assert_eq!(identity.tenant.as_deref(), Some("acme"));
        assert_eq!(identity.role, Role::Writer);
        assert!(identity.expires_at > now_seconds());
    }

    #[test]
    fn expired_token_is_refused() {
        let mut old = request(Role::Reader, Some("acme"));
        old.ttl_seconds = -3600;
        let token = mint(&old, KeyKind::Hs256, SECRET).unwrap();
        assert_eq!(rejected(&hs_verifier(), &token), "token expired");
    }

    #[test]
    fn a_token_just_past_exp_is_refused_despite_the_leeway() {
        let mut old = request(Role::Reader, Some("acme"));
        old.ttl_seconds = -5;
        let token = mint(&old, KeyKind::Hs256, SECRET).unwrap();
        assert_eq!(rejected(&hs_verifier(), &token), "token expired");
    }

    #[test]
    fn wrong_secret_is_refused() {
        let token = mint(
            &request(Role::Reader, Some("acme")),
            KeyKind::Hs256,
            b"another secret of at least 32 bytes!",
        )
        .unwrap();
        assert!(rejected(&hs_verifier(), &token).contains("signature"));
    }

    #[test]
    fn alg_none_is_refused() {
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = b64(format!(
            r#"{{"sub":"x","tenant":"acme","role":"admin","iss":"tessera","aud":"tessera","exp":{}}}"#,
            now_seconds() + 600
        )
        .as_bytes());
        let token = format!("{header}.{claims}.");
        assert!(rejected(&hs_verifier(), &token).contains("malformed token header"));
    }

    #[test]
    fn wrong_issuer_and_audience_are_refused() {
        let mut other = request(Role::Reader, Some("acme"));
        other.issuer = "someone-else".into();
        let token = mint(&other, KeyKind::Hs256, SECRET).unwrap();
        assert!(rejected(&hs_verifier(), &token).contains("issuer"));
        let mut other = request(Role::Reader, Some("acme"));
        other.audience = "another-service".into();
        let token = mint(&other, KeyKind::Hs256, SECRET).unwrap();
        assert!(rejected(&hs_verifier(), &token).contains("audience"));
    }

    #[test]
    fn unknown_key_id_is_refused() {
        let mut named = request(Role::Reader, Some("acme"));
        named.key_id = Some("k9".into());
        let token = mint(&named, KeyKind::Hs256, SECRET).unwrap();
        assert_eq!(rejected(&hs_verifier(), &token), "unknown key id \"k9\"");
    }

    #[test]
    fn rotation_picks_the_key_by_id() {
        let verifier = Verifier::new(AuthConfig::new(vec![
            KeySpec {
                id: Some("old".into()),
                kind: KeyKind::Hs256,
                material: SECRET.to_vec(),
            },
            KeySpec {
                id: Some("new".into()),
                kind: KeyKind::Hs256,
                material: b"the new secret, also 32 bytes long".to_vec(),
            },
        ]))
        .unwrap();
        for (id, secret) in [
            ("old", SECRET),
            ("new", &b"the new secret, also 32 bytes long"[..]),
        ] {
            let mut named = request(Role::Reader, Some("acme"));
            named.key_id = Some(id.into());
            let token = mint(&named, KeyKind::Hs256, secret).unwrap();
            assert!(verifier.verify(&token).is_ok(), "key {id}");
        }
        let token = mint(&request(Role::Reader, Some("acme")), KeyKind::Hs256, SECRET).unwrap();
        assert!(rejected(&verifier, &token).contains("several keys"));
    }

    #[test]
    fn operator_tokens_name_no_tenant_and_tenant_roles_need_one() {
        assert!(mint(
            &request(Role::Operator, Some("acme")),
            KeyKind::Hs256,
            SECRET
        )
        .is_err());
        assert!(mint(&request(Role::Reader, None), KeyKind::Hs256, SECRET).is_err());
        assert!(mint(
            &request(Role::Reader, Some("../etc")),
            KeyKind::Hs256,
            SECRET
        )
        .is_err());
        let token = mint(&request(Role::Operator, None), KeyKind::Hs256, SECRET).unwrap();
        let identity = hs_verifier().verify(&token).unwrap();
        assert_eq!((identity.tenant, identity.role), (None, Role::Operator));
    }

    #[test]
    fn short_secrets_are_refused_at_configuration() {
        let error = Verifier::new(AuthConfig::new(vec![KeySpec {
            id: None,
            kind: KeyKind::Hs256,
            material: b"short".to_vec(),
        }]));
        assert!(matches!(error, Err(AuthError::Invalid(_))));
    }

    const ED_PRIVATE: &[u8] = include_bytes!("../tests/data/test-ed25519.pem");
    const ED_PUBLIC: &[u8] = include_bytes!("../tests/data/test-ed25519.pub.pem");
    const RSA_PRIVATE: &[u8] = include_bytes!("../tests/data/test-rsa.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../tests/data/test-rsa.pub.pem");

    fn public_key_verifier() -> Verifier {
        Verifier::new(AuthConfig::new(vec![
            KeySpec {
                id: Some("ed".into()),
                kind: KeyKind::EdDsa,
                material: ED_PUBLIC.to_vec(),
            },
            KeySpec {
                id: Some("rsa".into()),
                kind: KeyKind::Rs256,
                material: RSA_PUBLIC.to_vec(),
            },
        ]))
        .unwrap()
    }

    #[test]
    fn eddsa_and_rs256_tokens_verify_with_their_public_keys() {
        let verifier = public_key_verifier();
        for (id, kind, key) in [
            ("ed", KeyKind::EdDsa, ED_PRIVATE),
            ("rsa", KeyKind::Rs256, RSA_PRIVATE),
        ] {
            let mut named = request(Role::Admin, Some("acme"));
            named.key_id = Some(id.into());
            let token = mint(&named, kind, key).unwrap();
            assert_eq!(verifier.verify(&token).unwrap().role, Role::Admin, "{id}");
        }
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        // The classic attack: sign HS256 with the server's *public* key as the shared secret.
        let verifier = public_key_verifier();
        let mut named = request(Role::Admin, Some("acme"));
        named.key_id = Some("rsa".into());
        let token = mint(&named, KeyKind::Hs256, RSA_PUBLIC).unwrap();
        assert!(rejected(&verifier, &token).contains("does not match its key's algorithm"));
        // And an EdDSA token presented under the RSA key's id.
        let token = mint(&named, KeyKind::EdDsa, ED_PRIVATE).unwrap();
        assert!(rejected(&verifier, &token).contains("does not match its key's algorithm"));
    }

    #[test]
    fn not_yet_valid_token_is_refused() {
        let header = Header {
            kid: None,
            ..Header::new(Algorithm::HS256)
        };
        let now = now_seconds();
        let claims = Claims {
            sub: "x".into(),
            tenant: Some("acme".into()),
            role: Role::Reader,
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
            exp: now + 7200,
            nbf: Some(now + 3600),
            iat: Some(now),
        };
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        assert!(rejected(&hs_verifier(), &token).contains("not yet valid"));
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("15m").unwrap(), 900);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("7d").unwrap(), 604_800);
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}

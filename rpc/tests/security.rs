//! Authority over RPC: a token scopes everything to one tenant and role; bad tokens are refused.
//! Each refusal kind has its own test.

mod common;

use common::{block_on, start, token, SECRET};
use tessera_rpc::auth::{self, KeyKind, Role, TokenRequest};
use tessera_rpc::{Client, ClientError};

fn login_error(server: &common::TestServer, token: &str) -> ClientError {
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        match client.login(token).await {
            Ok(_) => panic!("login with a bad token succeeded"),
            Err(error) => error,
        }
    })
}

fn request(tenant: &str, role: Role, ttl_seconds: i64) -> TokenRequest {
    TokenRequest {
        subject: "test".into(),
        tenant: Some(tenant.into()),
        role,
        ttl_seconds,
        key_id: None,
        issuer: auth::DEFAULT_ISSUER.into(),
        audience: auth::DEFAULT_AUDIENCE.into(),
    }
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &b| acc << 8 | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn expired_token_is_refused() {
    let server = start(1000, common::default_limits());
    let expired = auth::mint(
        &request("acme", Role::Reader, -3600),
        KeyKind::Hs256,
        SECRET,
    )
    .unwrap();
    let error = login_error(&server, &expired);
    assert_eq!(error.code(), "unauthenticated", "{error}");
    assert!(error.to_string().contains("expired"), "{error}");
}

#[test]
fn forged_token_is_refused() {
    // A real reader token for acme with its claims rewritten to admin of globex; the signature
    // no longer matches.
    let server = start(1000, common::default_limits());
    let genuine = token(Some("acme"), Role::Reader);
    let parts: Vec<&str> = genuine.split('.').collect();
    let claims = format!(
        r#"{{"sub":"test","tenant":"globex","role":"admin","iss":"tessera","aud":"tessera","exp":{}}}"#,
        auth::now_seconds() + 3600
    );
    let forged = format!("{}.{}.{}", parts[0], base64url(claims.as_bytes()), parts[2]);
    let error = login_error(&server, &forged);
    assert_eq!(error.code(), "unauthenticated", "{error}");
    assert!(error.to_string().contains("signature"), "{error}");
}

#[test]
fn alg_none_token_is_refused() {
    let server = start(1000, common::default_limits());
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = base64url(
        format!(
            r#"{{"sub":"test","tenant":"acme","role":"admin","iss":"tessera","aud":"tessera","exp":{}}}"#,
            auth::now_seconds() + 3600
        )
        .as_bytes(),
    );
    let error = login_error(&server, &format!("{header}.{claims}."));
    assert_eq!(error.code(), "unauthenticated", "{error}");
}

#[test]
fn wrong_key_token_is_refused() {
    let server = start(1000, common::default_limits());
    let other = auth::mint(
        &request("acme", Role::Admin, 3600),
        KeyKind::Hs256,
        b"some other secret, also long enough",
    )
    .unwrap();
    let error = login_error(&server, &other);
    assert_eq!(error.code(), "unauthenticated", "{error}");
    let garbage = login_error(&server, "not a token at all");
    assert_eq!(garbage.code(), "unauthenticated", "{garbage}");
}

#[test]
fn a_tenant_never_sees_another_tenants_tables() {
    let server = start(1000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let acme = client
            .login(&token(Some("acme"), Role::Admin))
            .await
            .unwrap();
        // globex/secrets exists; to acme it is indistinguishable from a table that never did.
        let exists_elsewhere = acme
            .query_collect("SELECT COUNT(*) FROM secrets")
            .await
            .unwrap_err();
        let never_existed = acme
            .query_collect("SELECT COUNT(*) FROM nothing")
            .await
            .unwrap_err();
        assert_eq!(exists_elsewhere.code(), "not_found", "{exists_elsewhere}");
        assert_eq!(
            exists_elsewhere.to_string().replace("secrets", "X"),
            never_existed.to_string().replace("nothing", "X")
        );
        for error in [&exists_elsewhere, &never_existed] {
            assert!(!error.to_string().contains("globex"), "{error}");
        }
        let tables: Vec<String> = acme
            .tables()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(tables, vec!["events".to_string()]);
        let error = acme.describe("secrets").await.unwrap_err();
        assert_eq!(error.code(), "not_found", "{error}");
        let error = acme
            .import("secrets", common::events(10))
            .await
            .unwrap_err();
        assert_eq!(error.code(), "not_found", "{error}");
        assert!(!acme.drop_table("secrets").await.unwrap());
        // Path tricks are names, and invalid ones.
        for name in ["../globex/secrets", "globex/secrets", ".", ".."] {
            let error = acme.describe(name).await.unwrap_err();
            assert_eq!(error.code(), "invalid", "{name}: {error}");
            let error = acme
                .query_collect(&format!("SELECT COUNT(*) FROM \"{name}\""))
                .await
                .unwrap_err();
            assert!(matches!(error.code(), "invalid" | "sql"), "{name}: {error}");
        }
    });
    // globex's table is untouched.
    let count = server
        .engine()
        .sql("globex", "SELECT COUNT(*) FROM secrets")
        .unwrap();
    assert_eq!(count.num_rows(), 1);
}

#[test]
fn roles_bound_what_a_capability_can_do() {
    let server = start(1000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let operator_token = token(None, Role::Operator);
        // An operator token is not a tenant login, and a tenant token is not an operator.
        let error = client.login(&operator_token).await.unwrap_err();
        assert_eq!(error.code(), "permission", "{error}");
        let error = client
            .operator_login(&token(Some("acme"), Role::Admin))
            .await
            .unwrap_err();
        assert_eq!(error.code(), "permission", "{error}");
        let operator = client.operator_login(&operator_token).await.unwrap();
        assert!(operator.create_tenant("initech").await.unwrap());
        let tenants = operator.list_tenants().await.unwrap();
        assert_eq!(tenants, vec!["acme", "globex", "initech"]);
        let writer = client
            .login(&token(Some("acme"), Role::Writer))
            .await
            .unwrap();
        let error = writer.drop_table("events").await.unwrap_err();
        assert_eq!(error.code(), "permission", "{error}");
        let (tenant, role, _) = writer.whoami().await.unwrap();
        assert_eq!((tenant.as_str(), role), ("acme", Role::Writer));
    });
}

#[test]
fn tls_serves_trusting_clients_and_refuses_plain_ones() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let server = common::start_tls(
        1000,
        tessera_rpc::TlsFiles {
            certificate: data.join("test-tls.crt"),
            key: data.join("test-tls.key"),
        },
    );
    let ca = std::fs::read(data.join("test-ca.crt")).unwrap();
    block_on(async {
        let options = tessera_rpc::ConnectOptions {
            tls_ca_pem: Some(ca.clone()),
            tls_server_name: Some("localhost".into()),
        };
        let client = Client::connect_with(&server.address(), options)
            .await
            .unwrap();
        let session = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        let output = session
            .query_collect("SELECT COUNT(*) FROM events")
            .await
            .unwrap();
        assert_eq!(output.num_rows(), 1);
        // Wrong name on the certificate: the handshake fails on the client.
        let wrong = tessera_rpc::ConnectOptions {
            tls_ca_pem: Some(ca),
            tls_server_name: Some("elsewhere.example".into()),
        };
        let error = Client::connect_with(&server.address(), wrong)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("TLS"), "{error}");
        // A plain-TCP client gets no answer it can use.
        let plain = Client::connect(&server.address()).await.unwrap();
        assert!(plain.version().await.is_err());
    });
}

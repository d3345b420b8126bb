//! User tokens from an identity provider: RS256 and ES256, verified with the keys its JWKS URL
//! publishes (a real HTTP server here, serving keys this test makes), with issuer, audience and
//! user-claim rules, key rotation and a rate limit on refetching.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, routing::get};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use entitle::{config::UserAuth, jwks::JwksSettings};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::{elliptic_curve::sec1::ToEncodedPoint, pkcs8::EncodePrivateKey as _};
use reqwest::StatusCode;
use rsa::{pkcs1::EncodeRsaPrivateKey, traits::PublicKeyParts};
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, unix_now};

/// A key pair the test made: its private half signs, its public half is published as a JWK.
struct ProviderKey {
    kid: String,
    alg: Algorithm,
    signing: EncodingKey,
    jwk: Value,
}

impl ProviderKey {
    fn rsa(kid: &str) -> Self {
        let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let der = private.to_pkcs1_der().unwrap();
        let public = private.to_public_key();
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            signing: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({
                "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            }),
        }
    }

    fn ec(kid: &str) -> Self {
        let private = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let der = private.to_pkcs8_der().unwrap();
        let point = private.public_key().to_encoded_point(false);
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            signing: EncodingKey::from_ec_der(der.as_bytes()),
            // No `alg`, as some providers publish them: the key type alone says ES256.
            jwk: json!({
                "kty": "EC", "crv": "P-256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
            }),
        }
    }

    fn token(&self, claims: Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.signing).unwrap()
    }
}

#[derive(Clone, Default)]
struct Provider {
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    async fn serve(self) -> String {
        async fn jwks(State(provider): State<Provider>) -> Json<Value> {
            provider.fetches.fetch_add(1, Ordering::SeqCst);
            // A key type we do not verify, beside ours, must not hide them.
            let mut keys = vec![json!({"kty": "oct", "kid": "shared", "k": "c2VjcmV0"})];
            keys.extend(provider.keys.lock().unwrap().iter().cloned());
            Json(json!({ "keys": keys }))
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/.well-known/jwks.json", get(jwks))
            .with_state(self);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://127.0.0.1:{}/.well-known/jwks.json", addr.port())
    }

    fn publish(&self, key: &ProviderKey) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn spawn_with(provider: &Provider, auth: UserAuth) -> TestApp {
    let url = provider.clone().serve().await;
    TestApp::spawn_with(Options {
        user_auth: UserAuth {
            jwks: Some(JwksSettings {
                url,
                min_refetch: Duration::from_millis(300),
                max_age: Duration::from_secs(600),
            }),
            ..auth
        },
        ..Options::default()
    })
    .await
}

fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": unix_now() + 600 })
}

async fn entitlements_as(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.get("/entitlements", Some(token)).await
}

#[tokio::test]
async fn rs256_and_es256_tokens_signed_by_published_keys_name_their_user() {
    let provider = Provider::default();
    let (rsa, ec) = (ProviderKey::rsa("rsa-1"), ProviderKey::ec("ec-1"));
    provider.publish(&rsa);
    provider.publish(&ec);
    let app = spawn_with(&provider, UserAuth::default()).await;

    for (key, user) in [(&rsa, "user_rsa"), (&ec, "user_ec")] {
        // Providers put their own `aud`; with no AUTH_AUDIENCE it is not a reason to refuse.
        let token = key.token(json!({ "sub": user, "exp": unix_now() + 600, "aud": "authenticated" }));
        let (status, body) = entitlements_as(&app, &token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["userId"], user);
    }
    // The second token found its key in the cache.
    assert_eq!(provider.fetches(), 1);
    // The shared-secret tokens of the app's own auth still work beside them.
    let (status, _) = entitlements_as(&app, &crate::helpers::token_for("alice")).await;
    assert_eq!(status, StatusCode::OK);
    // And an API-key route still refuses a user token.
    let token = rsa.token(claims("user_rsa"));
    let (status, _) = app
        .post_json("/v1/check", Some(&token), &json!({ "userId": "user_rsa" }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forged_expired_and_confused_tokens_are_refused() {
    let provider = Provider::default();
    let published = ProviderKey::rsa("rsa-1");
    provider.publish(&published);
    let app = spawn_with(&provider, UserAuth::default()).await;

    // Signed by a key that claims a published kid but is not that key.
    let impostor = ProviderKey::rsa("rsa-1");
    // The published public key used as an HMAC secret: the classic key-confusion forgery.
    let public_as_secret = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".to_owned());
        let secret = serde_json::to_vec(&published.jwk).unwrap();
        jsonwebtoken::encode(&header, &claims("mallory"), &EncodingKey::from_secret(&secret)).unwrap()
    };
    // The `oct` key the provider serves must not verify anything either.
    let with_oct_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("shared".to_owned());
        jsonwebtoken::encode(&header, &claims("mallory"), &EncodingKey::from_secret(b"secret")).unwrap()
    };
    let no_kid = {
        let header = Header::new(Algorithm::RS256);
        jsonwebtoken::encode(&header, &claims("mallory"), &published.signing).unwrap()
    };
    let cases = [
        ("impostor", impostor.token(claims("mallory"))),
        (
            "expired",
            published.token(json!({ "sub": "mallory", "exp": unix_now() - 5 })),
        ),
        ("no exp", published.token(json!({ "sub": "mallory" }))),
        (
            "not yet valid",
            published.token(json!({ "sub": "mallory", "exp": unix_now() + 600, "nbf": unix_now() + 300 })),
        ),
        ("no sub", published.token(json!({ "exp": unix_now() + 600 }))),
        ("user id too long", published.token(claims(&"x".repeat(256)))),
        ("empty user id", published.token(claims(""))),
        ("public key as HMAC secret", public_as_secret),
        ("oct key", with_oct_key),
        ("no kid", no_kid),
    ];
    for (case, token) in cases {
        let (status, body) = entitlements_as(&app, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
    }
}

#[tokio::test]
async fn a_rotated_in_key_is_fetched_on_its_first_token_and_unknown_kids_are_rate_limited() {
    let provider = Provider::default();
    let first = ProviderKey::ec("ec-1");
    provider.publish(&first);
    let app = spawn_with(&provider, UserAuth::default()).await;
    assert_eq!(
        entitlements_as(&app, &first.token(claims("alice"))).await.0,
        StatusCode::OK
    );
    assert_eq!(provider.fetches(), 1);

    // A burst of tokens naming kids nobody published: one fetch for all of them.
    let made_up: Vec<_> = (0..30).map(|i| ProviderKey::ec(&format!("made-up-{i}"))).collect();
    let answers = futures::future::join_all(made_up.iter().map(|key| {
        let token = key.token(claims("mallory"));
        let app = &app;
        async move { entitlements_as(app, &token).await.0 }
    }))
    .await;
    assert!(answers.iter().all(|status| *status == StatusCode::UNAUTHORIZED));
    assert!(provider.fetches() <= 3, "{} fetches", provider.fetches());

    // The provider rotates in a new key: its first token, once the interval has passed, is
    // accepted after one more fetch; the old key keeps working too.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = ProviderKey::rsa("rsa-2");
    provider.publish(&second);
    let before = provider.fetches();
    let (status, body) = entitlements_as(&app, &second.token(claims("bob"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["userId"], "bob");
    assert_eq!(provider.fetches(), before + 1);
    assert_eq!(
        entitlements_as(&app, &first.token(claims("alice"))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn issuer_audience_and_the_user_claim_are_checked_when_configured() {
    let provider = Provider::default();
    let key = ProviderKey::rsa("rsa-1");
    provider.publish(&key);
    let app = spawn_with(
        &provider,
        UserAuth {
            issuer: Some("https://auth.example.com/".to_owned()),
            audiences: vec!["entitle".to_owned(), "other-api".to_owned()],
            user_claim: "user_id".to_owned(),
            ..UserAuth::default()
        },
    )
    .await;
    let exp = unix_now() + 600;
    let iss = "https://auth.example.com/";
    let cases = [
        (
            "right",
            json!({ "iss": iss, "aud": "entitle", "user_id": "u_42", "sub": "x", "exp": exp }),
            true,
        ),
        (
            "aud list",
            json!({ "iss": iss, "aud": ["x", "other-api"], "user_id": "u_42", "exp": exp }),
            true,
        ),
        (
            "wrong iss",
            json!({ "iss": "https://evil.example.com/", "aud": "entitle", "user_id": "u_42", "exp": exp }),
            false,
        ),
        (
            "no iss",
            json!({ "aud": "entitle", "user_id": "u_42", "exp": exp }),
            false,
        ),
        (
            "wrong aud",
            json!({ "iss": iss, "aud": "someone-else", "user_id": "u_42", "exp": exp }),
            false,
        ),
        ("no aud", json!({ "iss": iss, "user_id": "u_42", "exp": exp }), false),
        (
            "sub only",
            json!({ "iss": iss, "aud": "entitle", "sub": "u_42", "exp": exp }),
            false,
        ),
        (
            "claim not a string",
            json!({ "iss": iss, "aud": "entitle", "user_id": 42, "exp": exp }),
            false,
        ),
    ];
    for (case, claims, accepted) in cases {
        let (status, body) = entitlements_as(&app, &key.token(claims)).await;
        match accepted {
            true => {
                assert_eq!(status, StatusCode::OK, "{case}: {body}");
                assert_eq!(body["userId"], "u_42", "{case}");
            }
            false => assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}"),
        }
    }
}

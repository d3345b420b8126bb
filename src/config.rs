//! Settings read once at startup from the environment (and `.env`, when present). Every value is
//! validated here, so a bad deployment stops with one line naming the variable instead of failing
//! on the first payment.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

/// A value that must never reach a log line: `Debug` and `Display` print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: Secret,
    pub database_max_connections: u32,
    pub bind_addr: SocketAddr,
    /// The frontend origin, without a trailing slash.
    pub app_base_url: String,
    pub stripe_secret_key: Secret,
    /// Where the Stripe client sends requests; tests point it at a local stand-in.
    pub stripe_api_base: String,
    /// Every secret a webhook signature may match; more than one while a secret is being rotated.
    pub webhook_secrets: Vec<Secret>,
    pub webhook_tolerance: Duration,
    pub jwt_secret: Secret,
    pub plans_file: PathBuf,
}

/// Why the configuration was refused; its `Display` is the one line printed before exiting.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

fn invalid(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

impl Config {
    /// Reads the process environment, after loading `.env` if there is one (real variables win).
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any source of variables, so the rules can be tested alone.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let required = |name: &'static str| get(name).ok_or_else(|| invalid(name, "is not set"));

        let database_url = required("DATABASE_URL")?;
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            return Err(invalid("DATABASE_URL", "must be a postgres:// URL"));
        }

        // Few connections serve best while Postgres has few cores: on 2 cores, 8 answered order
        // status ~20 % faster than 16 with webhooks unchanged (docs/performance.md). Requests
        // beyond the pool wait in memory instead of as Postgres backends competing for the CPU.
        let database_max_connections = match get("DATABASE_MAX_CONNECTIONS") {
            None => 8,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| invalid("DATABASE_MAX_CONNECTIONS", "must be a number from 1 to 1000"))?,
        };

        let bind_addr = get("BIND_ADDR")
            .unwrap_or_else(|| "127.0.0.1:3000".into())
            .parse()
            .map_err(|_| invalid("BIND_ADDR", "must be an address like 127.0.0.1:3000"))?;

        let app_base_url = get("APP_BASE_URL").unwrap_or_else(|| "http://localhost:3000".into());
        let app_base_url = http_url("APP_BASE_URL", &app_base_url)?;

        let stripe_secret_key = required("STRIPE_SECRET_KEY")?;
        if !(stripe_secret_key.starts_with("sk_") || stripe_secret_key.starts_with("rk_")) {
            return Err(invalid(
                "STRIPE_SECRET_KEY",
                "must be a Stripe secret key (sk_… or rk_…)",
            ));
        }

        let stripe_api_base = get("STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com".into());
        let stripe_api_base = http_url("STRIPE_API_BASE", &stripe_api_base)?;

        let webhook_secrets: Vec<Secret> = required("STRIPE_WEBHOOK_SECRET")?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect();
        if webhook_secrets.is_empty() || webhook_secrets.iter().any(|s| !s.expose().starts_with("whsec_")) {
            return Err(invalid(
                "STRIPE_WEBHOOK_SECRET",
                "must be one or more comma-separated whsec_… secrets",
            ));
        }

        let webhook_tolerance = match get("WEBHOOK_TOLERANCE_SECS") {
            None => Duration::from_secs(300),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=86_400).contains(n))
                .map(Duration::from_secs)
                .ok_or_else(|| invalid("WEBHOOK_TOLERANCE_SECS", "must be a number of seconds from 1 to 86400"))?,
        };

        let jwt_secret = required("AUTH_JWT_SECRET")?;
        if jwt_secret.len() < 32 {
            return Err(invalid(
                "AUTH_JWT_SECRET",
                "must be at least 32 characters (an HS256 key)",
            ));
        }

        let plans_file = PathBuf::from(get("PLANS_FILE").unwrap_or_else(|| "plans.toml".into()));

        Ok(Self {
            database_url: Secret::new(database_url),
            database_max_connections,
            bind_addr,
            app_base_url,
            stripe_secret_key: Secret::new(stripe_secret_key),
            stripe_api_base,
            webhook_secrets,
            webhook_tolerance,
            jwt_secret: Secret::new(jwt_secret),
            plans_file,
        })
    }
}

/// Accepts an http(s) origin or base URL and drops any trailing slash, so paths can be appended.
fn http_url(variable: &'static str, value: &str) -> Result<String, ConfigError> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| invalid(variable, "must start with http:// or https://"))?;
    if rest.trim_end_matches('/').is_empty() || rest.contains(char::is_whitespace) {
        return Err(invalid(variable, "must be a URL like https://example.com"));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn complete() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/entitle"),
            ("STRIPE_SECRET_KEY", "sk_test_123"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_one, whsec_two"),
            ("AUTH_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ])
    }

    fn load(vars: &HashMap<&'static str, &'static str>) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| vars.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn defaults_apply_when_only_required_values_are_set() {
        let config = load(&complete()).unwrap();
        assert_eq!(config.bind_addr.to_string(), "127.0.0.1:3000");
        assert_eq!(config.app_base_url, "http://localhost:3000");
        assert_eq!(config.stripe_api_base, "https://api.stripe.com");
        assert_eq!(config.webhook_tolerance, Duration::from_secs(300));
        assert_eq!(config.webhook_secrets.len(), 2);
        assert_eq!(config.plans_file, PathBuf::from("plans.toml"));
        assert_eq!(config.database_max_connections, 8);
    }

    #[test]
    fn each_missing_required_value_is_named() {
        for name in [
            "DATABASE_URL",
            "STRIPE_SECRET_KEY",
            "STRIPE_WEBHOOK_SECRET",
            "AUTH_JWT_SECRET",
        ] {
            let mut vars = complete();
            vars.remove(name);
            let err = load(&vars).unwrap_err();
            assert_eq!(err.variable, name);
            assert!(err.to_string().starts_with(name));
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        for (name, value) in [
            ("BIND_ADDR", "localhost"),
            ("APP_BASE_URL", "example.com"),
            ("STRIPE_WEBHOOK_SECRET", "not-a-secret"),
            ("STRIPE_SECRET_KEY", "pk_test_123"),
            ("WEBHOOK_TOLERANCE_SECS", "-5"),
            ("AUTH_JWT_SECRET", "short"),
            ("DATABASE_URL", "mysql://x"),
        ] {
            let mut vars = complete();
            vars.insert(name, value);
            assert_eq!(load(&vars).unwrap_err().variable, name, "{name}={value}");
        }
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let printed = format!("{:?}", load(&complete()).unwrap());
        assert!(!printed.contains("sk_test_123"));
        assert!(!printed.contains("whsec_one"));
        assert!(!printed.contains("0123456789abcdef"));
    }
}

//! Amazon MSK's IAM authentication (`sasl_mechanism = "AWS_MSK_IAM"`): SASL OAUTHBEARER with a
//! token that is a SigV4-presigned `kafka-cluster:Connect` request, signed with the task's AWS
//! credentials (the ECS task role), base64url-encoded — what Amazon's
//! `aws-msk-iam-sasl-signer` libraries produce. A token lives 15 minutes; [`Tokens`] signs a new
//! one every 5 (credentials rotate), and librdkafka asks for the current one when it needs it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::provider::ProvideCredentials as _;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tracing::warn;

/// How long a token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// How often a new token is signed.
const REFRESH: Duration = Duration::from_secs(300);
/// SigV4's URI encoding: everything but the unreserved characters.
const AWS_URI: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The presigned URL of a token (before base64url), for `region`, signed at `now`.
pub fn presigned_url(creds: &Credentials, region: &str, now: SystemTime) -> Result<String, String> {
    let url = format!("https://kafka.{region}.amazonaws.com/?Action=kafka-cluster%3AConnect");
    let identity = creds.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kafka-cluster")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    // The empty body's hash, as botocore's SigV4QueryAuth (which Amazon's signer libraries use)
    // signs it; not S3's UNSIGNED-PAYLOAD.
    let request = SignableRequest::new(
        "GET",
        url.as_str(),
        std::iter::empty(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let mut signed = url;
    for (name, value) in instructions.params() {
        signed.push('&');
        signed.push_str(name);
        signed.push('=');
        signed.extend(utf8_percent_encode(value, AWS_URI));
    }
    signed.push_str("&User-Agent=edfi-cdc%2F");
    signed.push_str(env!("CARGO_PKG_VERSION"));
    Ok(signed)
}

/// A token for `region` signed at `now`, and when it expires (milliseconds since the epoch).
pub fn token(creds: &Credentials, region: &str, now: SystemTime) -> Result<(String, i64), String> {
    let url = presigned_url(creds, region, now)?;
    let expires = (now + TOKEN_LIFETIME)
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis() as i64;
    Ok((URL_SAFE_NO_PAD.encode(url), expires))
}

/// The current token, signed again every 5 minutes from the AWS environment's credentials.
pub struct Tokens {
    current: Mutex<Result<(String, i64), String>>,
}

impl Tokens {
    /// Sign the first token (an error names what is missing: the region, the credentials) and
    /// keep signing in the background while the returned value lives.
    pub async fn start() -> Result<Arc<Tokens>, String> {
        let sdk = crate::aws::sdk_config().await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .ok_or("MSK IAM authentication needs the AWS region: set AWS_REGION")?;
        let provider = sdk
            .credentials_provider()
            .ok_or("MSK IAM authentication found no AWS credentials provider")?;
        let sign_now = {
            let (provider, region) = (provider.clone(), region.clone());
            move || {
                let (provider, region) = (provider.clone(), region.clone());
                async move {
                    let creds = provider.provide_credentials().await.map_err(|e| {
                        format!(
                            "AWS credentials for MSK IAM: {}",
                            crate::aws::error_chain(&e)
                        )
                    })?;
                    token(&creds, &region, SystemTime::now())
                }
            }
        };
        let tokens = Arc::new(Tokens {
            current: Mutex::new(Ok(sign_now().await?)),
        });
        let weak = Arc::downgrade(&tokens);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(tokens) = weak.upgrade() else {
                    return;
                };
                match sign_now().await {
                    Ok(t) => *tokens.current.lock().expect("not poisoned") = Ok(t),
                    // The current token stays valid for a while yet: try again at the next turn.
                    Err(e) => warn!(error = %e, "could not sign a new MSK IAM token"),
                }
            }
        });
        Ok(tokens)
    }

    /// The token librdkafka hands to the brokers.
    pub fn oauth_token(&self) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        let (token, lifetime_ms) = self.current.lock().expect("not poisoned").clone()?;
        Ok(rdkafka::client::OAuthToken {
            token,
            principal_name: "edfi-cdc".into(),
            lifetime_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_the_base64url_of_a_presigned_connect_request() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("session".into()),
            None,
            "test",
        );
        let at = UNIX_EPOCH + Duration::from_secs(1_764_806_400);
        let (token, expires) = token(&creds, "us-east-1", at).unwrap();
        assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'));
        let url = String::from_utf8(URL_SAFE_NO_PAD.decode(&token).unwrap()).unwrap();
        assert!(
            url.starts_with(
                "https://kafka.us-east-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"
            ),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20251204%2Fus-east-1%2Fkafka-cluster%2Faws4_request",
            "X-Amz-Date=20251204T000000Z",
            "X-Amz-Expires=900",
            "X-Amz-SignedHeaders=host",
            "X-Amz-Security-Token=session",
            "X-Amz-Signature=",
            "User-Agent=edfi-cdc%2F",
        ] {
            assert!(url.contains(part), "{part} in {url}");
        }
        assert_eq!(expires, (1_764_806_400 + 900) * 1000);
    }
}

//! The AWS SDK settings every AWS client here shares: the standard environment (region,
//! credentials, `AWS_ENDPOINT_URL`, the ECS task role), TLS by rustls (ring), not OpenSSL, and
//! timeouts.

/// Load the shared SDK configuration from the environment.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts())
        .load()
        .await
}

/// A call whose connection does not open in 10 s, or whose answer does not start within 2
/// minutes of the request (an S3 part upload included), fails and is retried: a black-holed
/// endpoint must not hold a flush or a stream read for ever.
fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(120))
        .build()
}

/// An error and its sources on one line (the SDK's credential-chain errors span several).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

/// Whether a call failed before it was sent because no credential provider had credentials (a
/// configuration error, not worth retrying).
pub fn no_credentials<E: std::error::Error + 'static>(e: &aws_sdk_s3::error::SdkError<E>) -> bool {
    match e {
        aws_sdk_s3::error::SdkError::DispatchFailure(d) => {
            !d.is_io() && !d.is_timeout() && error_chain(e).to_lowercase().contains("credential")
        }
        _ => false,
    }
}

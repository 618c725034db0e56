//! The AWS SDK settings every AWS client here shares: the standard environment (region,
//! credentials, `AWS_ENDPOINT_URL`, the ECS task role) and TLS by rustls (ring), not OpenSSL.

/// Load the shared SDK configuration from the environment.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await
}

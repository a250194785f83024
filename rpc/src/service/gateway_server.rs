//! `Gateway`: the bootstrap capability; login turns a verified token into a `Tenant` or `Operator`.

use super::*;

pub fn gateway(connection: Rc<Connection>) -> gateway::Client {
    capnp_rpc::new_client(GatewayServer { connection })
}

struct GatewayServer {
    connection: Rc<Connection>,
}

impl GatewayServer {
    fn verify(&self, token: &str) -> Result<Identity, Error> {
        self.connection
            .shared
            .verifier()
            .verify(token)
            .map_err(|e| {
                self.connection.shared.metrics.logins_failed.inc();
                error("unauthenticated", e)
            })
    }
}

impl gateway::Server for GatewayServer {
    async fn login(
        self: Rc<Self>,
        params: gateway::LoginParams,
        mut results: gateway::LoginResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        let token = text(params.get()?.get_token()?)?;
        let identity = self.verify(&token)?;
        let Some(tenant) = identity.tenant.clone() else {
            return Err(error(
                "permission",
                "an operator token has no tenant; use operatorLogin",
            ));
        };
        let mut out = results.get();
        out.set_role(wire_role(identity.role));
        out.set_tenant(capnp_rpc::new_client(TenantServer {
            connection: self.connection.clone(),
            tenant,
            identity,
            running: RefCell::new(HashMap::new()),
            next_query: Cell::new(0),
            origin: Origin::Client,
        }));
        Ok(())
    }

    async fn peer_login(
        self: Rc<Self>,
        params: gateway::PeerLoginParams,
        mut results: gateway::PeerLoginResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        let params = params.get()?;
        let token = text(params.get_token()?)?;
        let tenant = text(params.get_tenant()?)?;
        let origin = match params.get_mode()? {
            tessera_schema::tessera_capnp::PeerMode::Replica => Origin::Replica,
            tessera_schema::tessera_capnp::PeerMode::Forwarded => Origin::Forwarded,
        };
        let identity = self.verify(&token)?;
        if identity.role != Role::Node {
            return Err(error(
                "permission",
                format!(
                    "a {} token cannot act for a peer node; peers use node tokens",
                    identity.role.name()
                ),
            ));
        }
        manifest::validate_name("tenant", &tenant).map_err(engine_error)?;
        // The peer acts as the tenant's admin for this capability's lifetime, on this node only.
        let identity = Identity {
            tenant: Some(tenant.clone()),
            role: Role::Admin,
            ..identity
        };
        results
            .get()
            .set_tenant(capnp_rpc::new_client(TenantServer {
                connection: self.connection.clone(),
                tenant,
                identity,
                running: RefCell::new(HashMap::new()),
                next_query: Cell::new(0),
                origin,
            }));
        Ok(())
    }

    async fn operator_login(
        self: Rc<Self>,
        params: gateway::OperatorLoginParams,
        mut results: gateway::OperatorLoginResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        let token = text(params.get()?.get_token()?)?;
        let identity = self.verify(&token)?;
        // A node token too, for the one call it may make: a peer's own query_stats.
        if identity.role != Role::Operator && identity.role != Role::Node {
            return Err(error(
                "permission",
                format!("a {} token cannot act as operator", identity.role.name()),
            ));
        }
        results
            .get()
            .set_operator(capnp_rpc::new_client(OperatorServer {
                connection: self.connection.clone(),
                identity,
            }));
        Ok(())
    }

    async fn version(
        self: Rc<Self>,
        _: gateway::VersionParams,
        mut results: gateway::VersionResults,
    ) -> Result<(), Error> {
        let mut out = results.get();
        out.set_protocol(tessera_schema::PROTOCOL_VERSION);
        out.set_server(env!("CARGO_PKG_VERSION"));
        Ok(())
    }
}

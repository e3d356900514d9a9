# The connector's code, root-owned and read-only to the sandbox user.
ARG PKGS
FROM ${PKGS}
COPY connector /opt/connector
WORKDIR /opt/connector

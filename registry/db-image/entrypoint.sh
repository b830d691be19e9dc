#!/bin/sh
# cortexbox-db serve | health
#
# serve: on first start, initialise a cluster in /var/lib/cortexbox-db (role "cortexbox", the
# registry's database "cortexbox" and the community registry's "cortexbox_community": accounts,
# competitions and submissions, a database of its own so the public pages can never read a private
# score), then run PostgreSQL listening only on the unix socket in /run/cortexbox-db.
# health: exit 0 once that socket accepts connections (the image's HEALTHCHECK).
#
# Who may connect is decided by the socket folder's permissions (0770, owner and group 7432):
# root, uid 7432 or a member of gid 7432. Role cortexbox may use database cortexbox without a
# password; the superuser postgres only by peer authentication inside this container.
set -eu

PGBIN=/usr/lib/postgresql/15/bin
DATA_ROOT=/var/lib/cortexbox-db
PGDATA="$DATA_ROOT/15"
SOCKET_DIR=/run/cortexbox-db
DB=cortexbox
COMMUNITY_DB=cortexbox_community

command="${1:-serve}"

if [ "$(id -u)" = 0 ]; then
    if [ "$command" = serve ]; then
        # The socket folder is usually a bind mount that Docker created as root:root 0755.
        chown postgres:postgres "$SOCKET_DIR" "$DATA_ROOT"
        chmod 0770 "$SOCKET_DIR"
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$0" "$@"
fi

case "$command" in
health)
    exec "$PGBIN/pg_isready" -q -h "$SOCKET_DIR" -U "$DB" -d "$DB"
    ;;
serve)
    ;;
*)
    echo "usage: cortexbox-db serve | health" >&2
    exit 64
    ;;
esac

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "cortexbox-db: initialising a new cluster in $PGDATA" >&2
    # Built aside and moved into place, so an interrupted first start leaves no half cluster.
    rm -rf "$PGDATA.init"
    "$PGBIN/initdb" -D "$PGDATA.init" -U postgres -E UTF8 --locale=C.UTF-8 --auth=peer --no-instructions >&2
    cat > "$PGDATA.init/pg_hba.conf" <<HBA
# Unix socket only (listen_addresses = ''); access is limited by the socket folder's permissions.
# TYPE  DATABASE  USER      METHOD
local   all       postgres  peer
local   $DB       $DB       trust
local   $COMMUNITY_DB $DB   trust
HBA
    for statement in "CREATE ROLE $DB LOGIN;" "CREATE DATABASE $DB OWNER $DB;"; do
        echo "$statement" | "$PGBIN/postgres" --single -D "$PGDATA.init" postgres >/dev/null
    done
    mv "$PGDATA.init" "$PGDATA"
fi

# A cluster made before the community database existed gets it (and its access line) on its next start.
if [ ! -e "$PGDATA/cortexbox-community-created" ]; then
    grep -q "^local   $COMMUNITY_DB " "$PGDATA/pg_hba.conf" \
        || echo "local   $COMMUNITY_DB $DB   trust" >> "$PGDATA/pg_hba.conf"
    echo "CREATE DATABASE $COMMUNITY_DB OWNER $DB;" | "$PGBIN/postgres" --single -D "$PGDATA" postgres >/dev/null 2>&1 || true
    echo "SELECT 1;" | "$PGBIN/postgres" --single -D "$PGDATA" "$COMMUNITY_DB" >/dev/null
    touch "$PGDATA/cortexbox-community-created"
fi

exec "$PGBIN/postgres" -D "$PGDATA" \
    -c listen_addresses='' \
    -c unix_socket_directories="$SOCKET_DIR" \
    -c unix_socket_permissions=0770

# Copy of the standard `/capnp/stream.capnp` from Cap'n Proto (MIT licence, Copyright (c) 2019
# Cloudflare, Inc. and contributors), kept in the repository because Debian's `capnproto`
# package ships no standard schema files. Only its ids matter: a method declared `-> stream`
# returns this struct, and code generators recognise streaming by its id.
@0x86c366a91393f3f8;

struct StreamResult @0x995f9a3377c954ac {
  # Empty struct that serves as the return type of "streaming" methods.
}

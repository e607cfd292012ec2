DROP TABLE peer_domains;

-- The room lists an application service publishes per third-party network
-- (Client-Server API, "Application service room directory":
-- PUT /directory/list/appservice/{networkId}/{roomId}), shown by /publicRooms with
-- third_party_instance_id or include_all_networks. A row is a room published there.
CREATE TABLE appservice_room_list (
    appservice_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (appservice_id, network_id, room_id)
);

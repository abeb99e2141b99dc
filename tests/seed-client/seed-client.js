// client-side implementation
const socket = new WebSocket('ws://localhost:8080/api/v1/ws');

// Connection opened
socket.addEventListener('open', (event) => {
    console.log('Connected to WebSocket server');
    
    // Subscribe to ticker updates
    socket.send(JSON.stringify({
        type: 'subscribe_ticker',
        payload: {
            symbol: 'BTCUSDT'
        }
    }));
});

// Listen for messages
socket.addEventListener('message', (event) => {
    const data = JSON.parse(event.data);
    
    switch(data.type) {
        case 'portfolio_update':
            updatePortfolioUI(data.payload);
            break;
        case 'trade_notification':
            showTradeNotification(data.payload);
            break;
        case 'alert':
            showAlert(data.payload.alert_type, data.payload.message);
            break;
        case 'error':
            console.error('WebSocket error:', data.error);
            break;
    }
});

// Connection closed
socket.addEventListener('close', (event) => {
    console.log('Disconnected from WebSocket server');
});

// Handle errors
socket.addEventListener('error', (event) => {
    console.error('WebSocket error:', event);
});
